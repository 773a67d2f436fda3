export declare function newOrderId(customer: string): string;
