import CZlib
import Foundation

/// Reading files through zlib, the one funnel for its calls. `gzopen` reads gzip and
/// plain files alike, so `train-images-idx3-ubyte` and its `.gz` take the same path.
public enum Gzip {
    /// The whole (decompressed) content of a file; stops with an error past `limit` bytes
    /// so a corrupt or hostile file cannot exhaust memory.
    public static func readAll(_ path: String, limit: Int = 1 << 31) throws -> [UInt8] {
        guard FileManager.default.fileExists(atPath: path) else {
            throw DataError(file: path, problem: "no such file")
        }
        guard let gz = gzopen(path, "rb") else {
            throw DataError(file: path, problem: "gzopen failed: \(String(cString: strerror(errno)))")
        }
        defer { gzclose(gz) }
        gzbuffer(gz, 1 << 17)
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = chunk.withUnsafeMutableBytes { gzread(gz, $0.baseAddress, UInt32($0.count)) }
            if n < 0 {
                var code: Int32 = 0
                let message = gzerror(gz, &code).map { String(cString: $0) } ?? "unknown error"
                throw DataError(file: path, problem: "cannot decompress: \(message) (zlib \(code))")
            }
            if n == 0 { break }
            out.append(contentsOf: chunk[0 ..< Int(n)])
            if out.count > limit {
                throw DataError(file: path, problem: "more than \(limit) bytes after decompression")
            }
        }
        // gzread returns 0 both at a clean end and at a truncated stream; gzerror tells.
        var code: Int32 = 0
        let message = gzerror(gz, &code).map { String(cString: $0) } ?? ""
        if code != Z_OK && code != Z_STREAM_END {
            throw DataError(file: path, problem: "cannot decompress: \(message) (zlib \(code))")
        }
        return out
    }
}
