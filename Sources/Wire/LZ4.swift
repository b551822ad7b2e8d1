import Core
import CLZ4
import CZlib

/// LZ4 block compression, the one funnel for liblz4 calls.
public enum LZ4 {
    /// Compressed bytes, or nil when compression would not make the data smaller.
    public static func compress(_ input: [UInt8]) -> [UInt8]? {
        guard !input.isEmpty, input.count < Int(Int32.max) else { return nil }
        let bound = Int(LZ4_compressBound(Int32(input.count)))
        var out = [UInt8](repeating: 0, count: bound)
        let n = input.withUnsafeBytes { src in
            out.withUnsafeMutableBytes { dst in
                LZ4_compress_default(src.baseAddress!.assumingMemoryBound(to: CChar.self),
                                     dst.baseAddress!.assumingMemoryBound(to: CChar.self),
                                     Int32(input.count), Int32(bound))
            }
        }
        guard n > 0, Int(n) < input.count else { return nil }
        out.removeSubrange(Int(n)...)
        return out
    }

    /// Decompresses exactly `rawSize` bytes; the caller has already checked rawSize
    /// against its bound. Corrupt input is an error (LZ4_decompress_safe never writes
    /// outside the buffer).
    public static func decompress(_ input: ArraySlice<UInt8>, rawSize: Int) throws -> [UInt8] {
        guard rawSize > 0, rawSize < Int(Int32.max), input.count < Int(Int32.max) else {
            throw WireError.corruptCompression("raw size \(rawSize)")
        }
        var out = [UInt8](repeating: 0, count: rawSize)
        let n = input.withUnsafeBytes { src in
            out.withUnsafeMutableBytes { dst in
                LZ4_decompress_safe(src.baseAddress!.assumingMemoryBound(to: CChar.self),
                                    dst.baseAddress!.assumingMemoryBound(to: CChar.self),
                                    Int32(input.count), Int32(rawSize))
            }
        }
        guard n == Int32(rawSize) else {
            throw WireError.corruptCompression(n < 0 ? "decoder error \(n)" : "decoded \(n) bytes, header says \(rawSize)")
        }
        return out
    }
}
