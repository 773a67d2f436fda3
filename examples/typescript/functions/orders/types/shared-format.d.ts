// shared-format comes from the layer at run time (/opt/nodejs/node_modules), so it
// is not among this function's dependencies: its types are declared here.
declare module "shared-format" {
  export function formatMoney(cents: number): string;
}
