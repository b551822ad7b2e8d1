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
    /// A list in blocks of `ScaledBlocks.block` values, each block one power-of-two scale 2^e
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
    /// Four bits a value in blocks of the same length, each block a bf16 scale and each
    /// value a sign and one of eight levels of it, closer together near zero
    /// (`LevelBlocks`): about an eighth of fp32's bytes. Lossy as int8, kept the same way,
    /// and exact under re-encoding as int8 is (a block's largest value decodes to 12 times
    /// its scale, which gives the same scale again).
    case int4

    /// The byte that names the codec in a frame.
    public var tag: UInt8 {
        switch self {
        case .fp32: 0
        case .bf16: 1
        case .int8: 2
        case .int4: 3
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

    /// Bytes a value takes, rounded up (int4: 1), for sizing buffers.
    public var bytesPerValue: Int {
        switch self {
        case .fp32: 4
        case .bf16: 2
        case .int8, .int4: 1
        }
    }

    /// Whether its sender must keep the rounding for later steps (error feedback): int8's
    /// and int4's are too coarse to drop, bf16's (a relative 2^-9) is not.
    public var needsFeedback: Bool { self == .int8 || self == .int4 }

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
            ScaledBlocks.roundTrip(p, count: count)
        case .int4:
            LevelBlocks.roundTrip(p, count: count)
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
            ScaledBlocks.encode(p, count: count, into: &w)
        case .int4:
            LevelBlocks.encode(p, count: count, into: &w)
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
            try ScaledBlocks.decode(&r, into: out, count: count, what: rawValue)
        case .int4:
            try LevelBlocks.decode(&r, into: out, count: count)
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
