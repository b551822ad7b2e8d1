import Core

/// How gradient and parameter values travel: `communication.values` for top-k gradients,
/// `--gradient-codec` for uncompressed ones. The name is what configs, flags and JSON say;
/// `tag` is the byte a frame says.
public enum ValueCodec: String, Sendable, CaseIterable, Codable, ConfigChoice {
    /// IEEE fp32, exact.
    case fp32
    /// bfloat16 (the top 16 bits of fp32, rounded to nearest even): half the bytes,
    /// about 3 significant digits.
    case bf16
    /// A list in blocks of `Int8Values.block` values, each block one power-of-two scale 2^e
    /// (a signed exponent byte) and one signed byte q per value, v = q · 2^e with |q| ≤ 127:
    /// about a quarter of fp32's bytes, at least 7 significant bits for the largest value of
    /// a block and fewer for small ones. Lossy, so its sender keeps the rounding for later
    /// steps (error feedback): a worker in its residual, the coordinator in the update's.
    /// Blocks keep a whole dense gradient's scales local: one scale for a tensor would round
    /// most of its values to zero. A power of two makes a list exact under re-encoding:
    /// `roundTrip` gives the values the receiver decodes, bit for bit, and encoding those
    /// again writes the same list. A block with a non-finite value is sent as all NaN (the
    /// coordinator refuses it).
    case int8

    /// The byte that names the codec in a frame.
    public var tag: UInt8 {
        switch self {
        case .fp32: 0
        case .bf16: 1
        case .int8: 2
        }
    }

    public init?(tag: UInt8) {
        guard let c = Self.allCases.first(where: { $0.tag == tag }) else { return nil }
        self = c
    }

    /// Reads a codec's tag byte; an unknown one is malformed.
    public static func read(_ r: inout ByteReader, _ what: String) throws -> ValueCodec {
        let tag = try r.u8(what)
        guard let c = ValueCodec(tag: tag) else { throw WireError.malformedPayload("\(what) \(tag)") }
        return c
    }

    public var bytesPerValue: Int {
        switch self {
        case .fp32: 4
        case .bf16: 2
        case .int8: 1
        }
    }

    /// Whether its sender must keep the rounding for later steps (error feedback): int8's
    /// is too coarse to drop, bf16's (a relative 2^-9) is not.
    public var needsFeedback: Bool { self == .int8 }

    /// Whether every value arrives exactly as it was.
    public var isExact: Bool { self == .fp32 }

    /// Replaces each value by what the receiver decodes from it.
    public func roundTrip(_ p: UnsafeMutablePointer<Float>, count: Int) {
        switch self {
        case .fp32:
            return
        case .bf16:
            for i in 0 ..< count { p[i] = BFloat16.float(BFloat16.bits(p[i])) }
        case .int8:
            Int8Values.forEachBlock(count) { b, n in
                let q = p + b
                guard let e = Int8Values.exponent(q, count: n) else {
                    for i in 0 ..< n { q[i] = .nan }
                    return
                }
                Int8Values.round(q, count: n, exponent: e)
            }
        }
    }

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
        case .int8:
            w.raw([UInt8](unsafeUninitializedCapacity: Int8Values.encodedSize(count)) { out, written in
                var o = 0
                Int8Values.forEachBlock(count) { b, n in
                    let q = p + b
                    guard let e = Int8Values.exponent(q, count: n) else {
                        out[o] = UInt8(bitPattern: Int8Values.nonFinite)
                        for i in 0 ..< n { out[o + 1 + i] = 0 }
                        o += 1 + n
                        return
                    }
                    out[o] = UInt8(bitPattern: e)
                    Int8Values.quantize(q, count: n, exponent: e, into: out.baseAddress! + o + 1)
                    o += 1 + n
                }
                written = o
            })
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
        case .int8:
            let bytes = try r.raw(Int8Values.encodedSize(count), "int8 values")
            try bytes.withUnsafeBytes { src in
                var o = 0
                var bad: Int8? = nil
                Int8Values.forEachBlock(count) { b, n in
                    let e = Int8(bitPattern: src[o])
                    let q = out + b
                    if e == Int8Values.nonFinite {
                        for i in 0 ..< n { q[i] = .nan }
                    } else if e < Int8Values.minExponent || e > Int8Values.maxExponent {
                        bad = bad ?? e
                    } else {
                        let scale = Int8Values.scale(e)
                        for i in 0 ..< n { q[i] = Float(Int8(bitPattern: src[o + 1 + i])) * scale }
                    }
                    o += 1 + n
                }
                if let e = bad {
                    throw WireError.malformedPayload("int8 scale exponent \(e) outside \(Int8Values.minExponent)...\(Int8Values.maxExponent)")
                }
            }
        }
    }
}

/// The arithmetic of `ValueCodec.int8`, shared by the encoder and `roundTrip`.
public enum Int8Values {
    /// Values per scale: 64 keeps a scale within one row's neighbourhood of a weight
    /// matrix, for one byte in 64 (1.6%).
    public static let block = 64

    /// Bytes of `count` values: each block's exponent byte and one byte per value.
    public static func encodedSize(_ count: Int) -> Int { count + (count + block - 1) / block }

    /// Calls `body(start, count)` for each block of a list of `count` values, in order.
    @inline(__always) static func forEachBlock(_ count: Int, _ body: (Int, Int) throws -> Void) rethrows {
        var b = 0
        while b < count {
            let n = min(block, count - b)
            try body(b, n)
            b += n
        }
    }

    /// The exponent byte of a list with a NaN or an infinity.
    static let nonFinite: Int8 = .min
    /// 2^-140 is still a (subnormal) Float; values below half of it round to zero.
    static let minExponent: Int8 = -127
    /// 127 · 2^120 is below Float's largest finite value (about 2^128).
    static let maxExponent: Int8 = 120

    /// The smallest e with max |v| ≤ 127 · 2^e (nil when a value is not finite). A finite
    /// float's magnitude orders as its bits do, and a non-finite one's bits are the largest,
    /// so one max over the bits finds both.
    static func exponent(_ p: UnsafePointer<Float>, count: Int) -> Int8? {
        let magnitude = SIMD16<UInt32>(repeating: 0x7FFF_FFFF)
        var bits = SIMD16<UInt32>(repeating: 0)
        var i = 0
        while i + 16 <= count {
            bits = pointwiseMax(bits, unsafeBitCast(p.simd(SIMD16<Float>.self, at: i), to: SIMD16<UInt32>.self) & magnitude)
            i += 16
        }
        var top = bits.max()
        while i < count { top = max(top, p[i].bitPattern & 0x7FFF_FFFF); i += 1 }
        guard top < 0x7F80_0000 else { return nil }
        let m = Float(bitPattern: top)
        guard m > 0 else { return minExponent }
        // m / 127 = f · 2^x with f in [1, 2): e = x, or x + 1 when f > 1.
        let r = m / 127
        var e = Int(r.exponent) + (r.significand > 1 ? 1 : 0)
        while e > Int(minExponent) && m <= 127 * Float(sign: .plus, exponent: e - 1, significand: 1) { e -= 1 }
        while m > 127 * Float(sign: .plus, exponent: e, significand: 1) { e += 1 }
        return Int8(clamping: max(Int(minExponent), min(Int(maxExponent), e)))
    }

    @inline(__always) static func scale(_ e: Int8) -> Float { Float(sign: .plus, exponent: Int(e), significand: 1) }

    /// q = round(v / 2^e) to nearest, ties to even: within ±127 for an exponent from
    /// `exponent` (a power-of-two scale makes v / 2^e exact, so only the rounding rounds).
    @inline(__always) static func quantize(_ v: Float, _ inverse: Float) -> Int8 {
        Int8(clamping: Int((v * inverse).rounded(.toNearestOrEven)))
    }

    /// The bytes of `count` values at exponent `e` (`quantize`, sixteen at a time).
    static func quantize(_ p: UnsafePointer<Float>, count: Int, exponent e: Int8, into out: UnsafeMutablePointer<UInt8>) {
        let inverse = 1 / scale(e)
        var i = 0
        while i + 16 <= count {
            let q = SIMD16<Int32>((p.simd(SIMD16<Float>.self, at: i) * inverse).rounded(.toNearestOrEven), rounding: .towardZero)
            UnsafeMutableRawPointer(out + i).storeBytes(of: SIMD16<Int8>(truncatingIfNeeded: q), as: SIMD16<Int8>.self)
            i += 16
        }
        while i < count { out[i] = UInt8(bitPattern: quantize(p[i], inverse)); i += 1 }
    }

    /// Replaces `count` values by what the receiver decodes at exponent `e`.
    static func round(_ p: UnsafeMutablePointer<Float>, count: Int, exponent e: Int8) {
        let s = scale(e), inverse = 1 / s
        var i = 0
        while i + 16 <= count {
            // (+ 0: a value rounded to −0 decodes as +0, and the bits must agree.)
            p.store((p.simd(SIMD16<Float>.self, at: i) * inverse).rounded(.toNearestOrEven) * s + 0, at: i)
            i += 16
        }
        while i < count { p[i] = Float(quantize(p[i], inverse)) * s; i += 1 }
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
