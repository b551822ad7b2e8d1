/// How gradient and parameter values travel.
public enum ValueCodec: UInt8, Sendable, CaseIterable, Codable {
    /// IEEE fp32, exact.
    case fp32 = 0
    /// bfloat16 (the top 16 bits of fp32, rounded to nearest even): half the bytes,
    /// about 3 significant digits.
    case bf16 = 1

    public var bytesPerValue: Int { self == .fp32 ? 4 : 2 }

    public func encode(_ p: UnsafePointer<Float>, count: Int, into w: inout ByteWriter) {
        switch self {
        case .fp32:
            w.floats(p, count: count)
        case .bf16:
            var out = [UInt8](repeating: 0, count: 2 * count)
            out.withUnsafeMutableBytes { dst in
                let d = dst.baseAddress!.assumingMemoryBound(to: UInt16.self)
                for i in 0 ..< count { d[i] = BFloat16.bits(p[i]).littleEndian }
            }
            w.raw(out)
        }
    }

    public func decode(_ r: inout ByteReader, into out: UnsafeMutablePointer<Float>, count: Int) throws {
        switch self {
        case .fp32:
            try r.floats(into: out, count: count)
        case .bf16:
            let bytes = try r.raw(2 * count, "bf16 values")
            bytes.withUnsafeBytes { src in
                for i in 0 ..< count {
                    out[i] = BFloat16.float(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
                }
            }
        }
    }
}

public enum BFloat16 {
    /// Round to nearest even; NaN stays NaN.
    @inline(__always)
    public static func bits(_ x: Float) -> UInt16 {
        let b = x.bitPattern
        if x.isNaN { return UInt16(b >> 16) | 0x40 }
        let rounding = 0x7FFF + ((b >> 16) & 1)
        return UInt16((b &+ rounding) >> 16)
    }

    @inline(__always)
    public static func float(_ h: UInt16) -> Float { Float(bitPattern: UInt32(h) << 16) }
}

/// Sorted indices as deltas in LEB128 varints: dense index lists cost about one byte an
/// index, and LZ4 gains on top of that.
public enum IndexCodec {
    public static func encode(_ indices: some Collection<UInt32>, into w: inout ByteWriter) {
        w.varint(UInt64(indices.count))
        var previous: UInt32 = 0
        var first = true
        for i in indices {
            precondition(first || i > previous, "IndexCodec: indices must be strictly increasing")
            w.varint(UInt64(first ? i : i - previous))
            previous = i
            first = false
        }
    }

    /// Decodes and checks the list is strictly increasing and below `bound`.
    public static func decode(_ r: inout ByteReader, bound: UInt32, maxCount: Int) throws -> [UInt32] {
        let n = try r.varint("index count")
        guard n <= UInt64(maxCount) else { throw WireError.malformedPayload("\(n) indices, at most \(maxCount) allowed") }
        var out: [UInt32] = []
        out.reserveCapacity(Int(n))
        var current: UInt64 = 0
        for k in 0 ..< Int(n) {
            let d = try r.varint("index delta")
            if k > 0 && d == 0 { throw WireError.malformedPayload("indices not strictly increasing at \(k)") }
            guard d < UInt64(bound) else { throw WireError.malformedPayload("index delta \(d) not below \(bound)") }
            current = k == 0 ? d : current + d
            guard current < UInt64(bound) else { throw WireError.malformedPayload("index \(current) not below \(bound)") }
            out.append(UInt32(current))
        }
        return out
    }
}
