import { newOrderId } from "order-id"; // bundled (CommonJS that requires "crypto")
import { checksum, hasNativeBinding } from "fast-checksum"; // native: shipped in node_modules
import { formatMoney } from "shared-format"; // from the layer: external, not shipped
import { parseOrder, total } from "./src/order";

export const handler = async (event: unknown) => {
  const order = parseOrder(event);
  return {
    id: newOrderId(order.customer),
    total: formatMoney(total(order)),
    checksum: checksum(JSON.stringify(order)),
    nativeBinding: hasNativeBinding(),
  };
};
