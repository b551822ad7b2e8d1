import CZlib
import Datasets
import Foundation

// Writers of data files, for tests only: the shipped libraries read these formats and
// never write them.

extension IDXArray {
    /// Encodes unsigned-byte data as an IDX file.
    public func encoded() -> [UInt8] {
        var out: [UInt8] = [0, 0, 0x08, UInt8(dimensions.count)]
        for d in dimensions {
            out += [UInt8(d >> 24 & 0xFF), UInt8(d >> 16 & 0xFF), UInt8(d >> 8 & 0xFF), UInt8(d & 0xFF)]
        }
        return out + bytes
    }
}

extension Gzip {
    /// Writes bytes gzip-compressed.
    public static func write(_ path: String, _ bytes: [UInt8]) throws {
        guard let gz = gzopen(path, "wb") else {
            throw DataError(file: path, problem: "gzopen for writing failed: \(String(cString: strerror(errno)))")
        }
        let n = bytes.withUnsafeBytes { gzwrite(gz, $0.baseAddress, UInt32($0.count)) }
        let closed = gzclose(gz)
        guard Int(n) == bytes.count, closed == Z_OK else {
            throw DataError(file: path, problem: "gzwrite failed (wrote \(n) of \(bytes.count) bytes, close \(closed))")
        }
    }
}
