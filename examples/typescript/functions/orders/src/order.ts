export interface Order {
  customer: string;
  items: { sku: string; cents: number; quantity: number }[];
}

export function parseOrder(event: unknown): Order {
  const body = (event ?? {}) as Partial<Order>;
  if (typeof body.customer !== "string" || !Array.isArray(body.items)) {
    throw new TypeError("an order needs a customer and a list of items");
  }
  return { customer: body.customer, items: body.items };
}

export const total = (order: Order): number =>
  order.items.reduce((sum, item) => sum + item.cents * item.quantity, 0);
