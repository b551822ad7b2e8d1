import Core

/// How the positions of a top-k gradient travel: k strictly increasing indices below n.
/// Which code is smallest depends on the density k/n, so each list is coded all three ways
/// (by size, without writing) and the smallest goes, after a one-byte tag:
///
/// - `deltaVarint`: gaps as LEB128 varints, 1-5 bytes each; byte-aligned, LZ4 can gain on it.
/// - `rice`: gaps − 1 as Golomb-Rice codes with parameter r (the quotient in unary, r low
///   bits), r chosen from the mean gap; within about 0.1 bit of the entropy of random positions
///   (log2 C(n, k) / k, about log2(n/k) + 1.44 bits per index), whose gaps are geometric.
/// - `bitmap`: n bits; the smallest above a density of about 1/8.
public enum PositionCodec: UInt8, Sendable, CaseIterable {
    case deltaVarint = 0
    case rice = 1
    case bitmap = 2

    /// The bytes this code takes for `indices` below `bound`, tag and count included.
    public static func size(_ codec: PositionCodec, _ indices: UnsafeBufferPointer<UInt32>, bound: Int) -> Int {
        let head = 1 + varintSize(UInt64(indices.count))
        switch codec {
        case .deltaVarint:
            var total = 0, previous: UInt32 = 0
            for (k, i) in indices.enumerated() {
                total += varintSize(UInt64(k == 0 ? i : i - previous))
                previous = i
            }
            return head + total
        case .rice:
            let r = riceParameter(indices, bound: bound)
            return head + 1 + (riceBits(indices, r) + 7) / 8
        case .bitmap:
            return head + (bound + 7) / 8
        }
    }

    /// The smallest code for these indices. Every position below the bound (a dense
    /// update's list is a whole tensor) goes as the bitmap without sizing the others: its n
    /// bits are one an index, rice's at least that and a byte.
    public static func best(_ indices: UnsafeBufferPointer<UInt32>, bound: Int) -> PositionCodec {
        if indices.count == bound { return .bitmap }
        let sizes = allCases.map { size($0, indices, bound: bound) }
        return allCases[sizes.indices.min { sizes[$0] < sizes[$1] }!]
    }

    /// The Rice parameter: the best of the three around log2(mean gap · ln 2), the
    /// optimum for geometric gaps, by the bits each would take.
    static func riceParameter(_ indices: UnsafeBufferPointer<UInt32>, bound n: Int) -> Int {
        let k = indices.count
        guard k > 0 else { return 0 }
        let mean = Double(n - k) / Double(k)
        let estimate = mean * 0.6931 >= 1 ? Int((mean * 0.6931).rounded(.down)).bitWidthLog2 : 0
        return (max(0, estimate - 1) ... min(30, estimate + 1)).min { riceBits(indices, $0) < riceBits(indices, $1) }!
    }

    /// Bits of the Rice codes of the gaps with parameter r.
    static func riceBits(_ indices: UnsafeBufferPointer<UInt32>, _ r: Int) -> Int {
        var bits = 0, previous = -1
        for i in indices {
            bits += ((Int(i) - previous - 1) >> r) + 1 + r
            previous = Int(i)
        }
        return bits
    }

    static func varintSize(_ v: UInt64) -> Int {
        var x = v, n = 1
        while x >= 0x80 { x >>= 7; n += 1 }
        return n
    }

    /// Writes tag, count and the positions in the smallest code (or `codec`).
    public static func encode(_ indices: UnsafeBufferPointer<UInt32>, bound: Int, into w: inout ByteWriter,
                              codec chosen: PositionCodec? = nil) {
        let codec = chosen ?? best(indices, bound: bound)
        w.u8(codec.rawValue)
        w.varint(UInt64(indices.count))
        switch codec {
        case .deltaVarint:
            var previous: UInt32 = 0
            for (k, i) in indices.enumerated() {
                precondition(k == 0 || i > previous, "PositionCodec: indices must be strictly increasing")
                w.varint(UInt64(k == 0 ? i : i - previous))
                previous = i
            }
        case .rice:
            let r = riceParameter(indices, bound: bound)
            w.u8(UInt8(r))
            var bits = BitWriter()
            var previous = -1
            for i in indices {
                let gap = Int(i) - previous - 1
                precondition(gap >= 0, "PositionCodec: indices must be strictly increasing")
                bits.unary(gap >> r)
                bits.bits(UInt64(gap & ((1 << r) - 1)), count: r)
                previous = Int(i)
            }
            w.raw(bits.finish())
        case .bitmap:
            var map = [UInt8](repeating: 0, count: (bound + 7) / 8)
            for i in indices { map[Int(i) >> 3] |= 1 << (UInt8(i & 7)) }
            w.raw(map)
        }
    }

    /// Reads what `encode` wrote: at most `maxCount` strictly increasing indices below
    /// `bound`, into `out` (cleared first). Anything else is a wire error.
    public static func decode(_ r: inout ByteReader, bound: Int, maxCount: Int, into out: inout [UInt32]) throws {
        out.removeAll(keepingCapacity: true)
        let tag = try r.u8("position codec")
        guard let codec = PositionCodec(rawValue: tag) else { throw WireError.malformedPayload("position codec \(tag)") }
        let n = try r.varint("position count")
        guard n <= UInt64(min(maxCount, bound)) else { throw WireError.malformedPayload("\(n) positions, at most \(min(maxCount, bound)) allowed") }
        let count = Int(n)
        out.reserveCapacity(count)
        switch codec {
        case .deltaVarint:
            var current: UInt64 = 0
            for k in 0 ..< count {
                let d = try r.varint("position gap")
                if k > 0 && d == 0 { throw WireError.malformedPayload("positions not strictly increasing at \(k)") }
                current = k == 0 ? d : current + d
                guard current < UInt64(bound) else { throw WireError.malformedPayload("position \(current) not below \(bound)") }
                out.append(UInt32(current))
            }
        case .rice:
            let param = Int(try r.u8("rice parameter"))
            guard param <= 30 else { throw WireError.malformedPayload("rice parameter \(param)") }
            var bits = BitReader(r.bytes, offset: r.offset)
            var previous = -1
            for _ in 0 ..< count {
                let q = try bits.unary(limit: bound)
                let low = try bits.bits(count: param)
                let gap = (q << param) | Int(low)
                let i = previous + 1 + gap
                guard i < bound else { throw WireError.malformedPayload("position \(i) not below \(bound)") }
                out.append(UInt32(i))
                previous = i
            }
            _ = try r.raw(bits.bytesUsed(from: r.offset), "rice bits")
        case .bitmap:
            let map = try r.raw((bound + 7) / 8, "position bitmap")
            for (byteIndex, byte) in map.enumerated() where byte != 0 {
                // A full byte (a dense update's whole tensors) is eight positions in a row.
                if byte == 0xFF && byteIndex * 8 + 8 <= bound {
                    let first = UInt32(byteIndex * 8)
                    for k in 0 ..< UInt32(8) { out.append(first + k) }
                    continue
                }
                for bit in 0 ..< 8 where byte & (1 << UInt8(bit)) != 0 {
                    let i = byteIndex * 8 + bit
                    guard i < bound else { throw WireError.malformedPayload("bitmap position \(i) not below \(bound)") }
                    out.append(UInt32(i))
                }
            }
            guard out.count == count else { throw WireError.malformedPayload("bitmap holds \(out.count) positions, header says \(count)") }
        }
    }
}

extension Int {
    /// ⌊log2(self)⌋ for self ≥ 1, else 0.
    var bitWidthLog2: Int { self <= 1 ? 0 : Int.bitWidth - 1 - leadingZeroBitCount }
}

/// Bits, least significant first within each byte.
struct BitWriter {
    var bytes: [UInt8] = []
    var current: UInt64 = 0
    var filled = 0

    mutating func bits(_ value: UInt64, count: Int) {
        guard count > 0 else { return }
        var v = value, n = count
        while n > 0 {
            let take = min(n, 64 - filled)
            let part = take == 64 ? v : v & ((1 << UInt64(take)) - 1)
            current |= part << UInt64(filled)
            filled += take
            n -= take
            v = take == 64 ? 0 : v >> UInt64(take)
            if filled == 64 { flushWord() }
        }
    }

    /// q ones then a zero.
    mutating func unary(_ q: Int) {
        var left = q
        while left >= 32 { bits(0xFFFF_FFFF, count: 32); left -= 32 }
        bits((1 << UInt64(left)) - 1, count: left + 1)
    }

    mutating func flushWord() {
        withUnsafeBytes(of: current.littleEndian) { bytes.append(contentsOf: $0) }
        current = 0
        filled = 0
    }

    mutating func finish() -> [UInt8] {
        var out = bytes
        var c = current
        for _ in 0 ..< (filled + 7) / 8 { out.append(UInt8(c & 0xFF)); c >>= 8 }
        return out
    }
}

/// Reads what BitWriter wrote; every read past the end throws.
struct BitReader {
    let bytes: [UInt8]
    let start: Int
    var bit = 0

    init(_ bytes: [UInt8], offset: Int) { self.bytes = bytes; start = offset }

    mutating func next() throws -> Bool {
        let byte = start + bit >> 3
        guard byte < bytes.count else { throw WireError.malformedPayload("rice bits end early") }
        defer { bit += 1 }
        return bytes[byte] >> UInt8(bit & 7) & 1 == 1
    }

    /// Ones up to the next zero; more than `limit` is an error (a gap cannot exceed n).
    mutating func unary(limit: Int) throws -> Int {
        var q = 0
        while try next() {
            q += 1
            if q > limit { throw WireError.malformedPayload("rice quotient over \(limit)") }
        }
        return q
    }

    mutating func bits(count: Int) throws -> UInt64 {
        var v: UInt64 = 0
        for k in 0 ..< count where try next() { v |= 1 << UInt64(k) }
        return v
    }

    func bytesUsed(from offset: Int) -> Int { (bit + 7) / 8 }
}
