export declare function hasNativeBinding(): boolean;
export declare function checksum(text: string): number;
