import CLZ4
import CZeroMQ
import CZlib
import Testing

/// The C libraries the later modules build on are found, link and answer.
@Suite("system libraries")
struct SystemLibrariesTests {
    @Test func zeroMQ() {
        var major: Int32 = 0, minor: Int32 = 0, patch: Int32 = 0
        zmq_version(&major, &minor, &patch)
        #expect(major == 4 && minor >= 3)
    }

    @Test func lz4RoundTrip() {
        let input = [UInt8](repeating: 7, count: 4096) + (0 ..< 256).map { UInt8($0) }
        var compressed = [UInt8](repeating: 0, count: Int(LZ4_compressBound(Int32(input.count))))
        let n = input.withUnsafeBufferPointer { src in
            compressed.withUnsafeMutableBufferPointer { dst in
                LZ4_compress_default(UnsafeRawPointer(src.baseAddress!).assumingMemoryBound(to: CChar.self),
                                     UnsafeMutableRawPointer(dst.baseAddress!).assumingMemoryBound(to: CChar.self),
                                     Int32(input.count), Int32(dst.count))
            }
        }
        #expect(n > 0 && Int(n) < input.count / 4)
        var output = [UInt8](repeating: 0, count: input.count)
        let m = compressed.withUnsafeBufferPointer { src in
            output.withUnsafeMutableBufferPointer { dst in
                LZ4_decompress_safe(UnsafeRawPointer(src.baseAddress!).assumingMemoryBound(to: CChar.self),
                                    UnsafeMutableRawPointer(dst.baseAddress!).assumingMemoryBound(to: CChar.self),
                                    n, Int32(dst.count))
            }
        }
        #expect(Int(m) == input.count && output == input)
    }

    @Test func zlib() {
        #expect(String(cString: zlibVersion()).hasPrefix("1."))
        let input = [UInt8](repeating: 1, count: 1000)
        var bound = compressBound(uLong(input.count))
        var out = [UInt8](repeating: 0, count: Int(bound))
        #expect(compress(&out, &bound, input, uLong(input.count)) == Z_OK)
        #expect(bound < 100)
    }
}
