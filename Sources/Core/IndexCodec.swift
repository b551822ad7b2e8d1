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
