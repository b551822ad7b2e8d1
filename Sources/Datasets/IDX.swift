/// The IDX format of MNIST and Fashion-MNIST: two zero bytes, a type code (0x08 for
/// unsigned bytes), the number of dimensions, each dimension as a big-endian UInt32,
/// then the data row-major.
public struct IDXArray: Sendable, Equatable {
    public var dimensions: [Int]
    public var bytes: [UInt8]

    public init(dimensions: [Int], bytes: [UInt8]) {
        self.dimensions = dimensions; self.bytes = bytes
    }

    public static func parse(_ data: [UInt8], file: String) throws -> IDXArray {
        guard data.count >= 4 else {
            throw DataError(file: file, problem: "too short for an IDX header (\(data.count) bytes)")
        }
        guard data[0] == 0, data[1] == 0 else {
            throw DataError(file: file, problem: "not an IDX file (magic bytes \(data[0]) \(data[1]), expected 0 0)")
        }
        guard data[2] == 0x08 else {
            throw DataError(file: file, problem: String(format: "IDX element type 0x%02x is not supported (only 0x08, unsigned bytes)", data[2]))
        }
        let rank = Int(data[3])
        guard rank >= 1 && rank <= 4 else {
            throw DataError(file: file, problem: "IDX rank \(rank) is not 1–4")
        }
        let headerBytes = 4 + 4 * rank
        guard data.count >= headerBytes else {
            throw DataError(file: file, problem: "truncated IDX header (\(data.count) of \(headerBytes) bytes)")
        }
        var dims: [Int] = []
        for d in 0 ..< rank {
            let o = 4 + 4 * d
            dims.append(Int(data[o]) << 24 | Int(data[o + 1]) << 16 | Int(data[o + 2]) << 8 | Int(data[o + 3]))
        }
        let expected = dims.reduce(1, *)
        let found = data.count - headerBytes
        guard found == expected else {
            throw DataError(file: file, problem: found < expected
                ? "truncated: dimensions \(dims) need \(expected) bytes of data, found \(found)"
                : "\(found - expected) bytes of trailing data after dimensions \(dims)")
        }
        return IDXArray(dimensions: dims, bytes: Array(data[headerBytes...]))
    }
}
