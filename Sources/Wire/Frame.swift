import Core

/// The kinds of message the coordinator and workers exchange.
public enum MessageType: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case join = 1, welcome = 2, params = 3, grads = 4, heartbeat = 5, leave = 6, stop = 7, reject = 8

    public var description: String {
        switch self {
        case .join: "join"
        case .welcome: "welcome"
        case .params: "params"
        case .grads: "grads"
        case .heartbeat: "heartbeat"
        case .leave: "leave"
        case .stop: "stop"
        case .reject: "reject"
        }
    }
}

/// The fixed 56-byte header every frame starts with (little-endian):
///
/// ```
///  0 magic "SVTE"   4 version u16   6 type u8   7 flags u8
///  8 run id u64    16 step u64     24 mask version u32   28 reserved u32
/// 32 layout hash u64                40 raw payload size u32
/// 44 sent payload size u32          48 payload CRC-32 (as sent)
/// 52 header CRC-32 (bytes 0..<52)
/// ```
public struct FrameHeader: Sendable, Equatable {
    public static let size = 56
    public static let magic: UInt32 = 0x4554_5653  // "SVTE" as little-endian bytes
    /// 3: int8 top-k values (ValueCodec 2) and the communication.values and dense_below keys.
    /// 4: gradients may carry per-tensor mean squares, updates per-tensor variance scales
    /// (communication.track_variance).
    /// 5: params fields tagged, the step's compression named by kind, gradient values
    /// with their form and codec in bytes of their own, codecs named in JSON.
    /// 6: a gradient's summary carries the worker's compute seconds; the step order says
    /// whether mean squares are wanted.
    /// 7: int8 values in blocks of 64, each with its own scale, and int4 ones (codec 3);
    /// uncompressed steps and updates may go in either, each sender keeping its rounding.
    /// 8: int4 values are a sign and one of eight levels of a bf16 scale per block.
    public static let protocolVersion: UInt16 = 8
    /// flags bit 0: the payload is LZ4-compressed.
    public static let flagLZ4: UInt8 = 1

    public var type: MessageType
    public var flags: UInt8 = 0
    public var runID: UInt64
    public var step: UInt64
    public var maskVersion: UInt32
    public var layoutHash: UInt64
    public var rawSize: Int = 0
    public var sentSize: Int = 0

    public init(type: MessageType, runID: UInt64, step: UInt64 = 0, maskVersion: UInt32 = 0, layoutHash: UInt64) {
        self.type = type; self.runID = runID; self.step = step; self.maskVersion = maskVersion; self.layoutHash = layoutHash
    }

    public var compressed: Bool { flags & Self.flagLZ4 != 0 }
}

/// What a receiver insists on before it looks at a payload.
public struct FrameLimits: Sendable {
    /// Largest raw (decompressed) payload accepted.
    public var maxRawBytes: Int
    /// The run this receiver belongs to (nil: accept any, e.g. a worker before welcome).
    public var runID: UInt64?
    /// The parameter layout this receiver uses (nil: accept any).
    public var layoutHash: UInt64?

    public init(maxRawBytes: Int, runID: UInt64? = nil, layoutHash: UInt64? = nil) {
        self.maxRawBytes = maxRawBytes; self.runID = runID; self.layoutHash = layoutHash
    }

    /// The largest payload a well-behaved peer sends for a model of `parameters` floats.
    /// A weight travels at most once as a value (4 bytes) and once in an index list (a
    /// mask change or a grow candidate: a varint of at most 5 bytes, plus 4 for a
    /// candidate's value), so 9 bytes per weight bound grads and params alike, plus a
    /// mask bitmap (1/8 byte per weight) and headers. A dense bound (4 per weight) is
    /// too small: an update step's grads carry the active values and up to every
    /// inactive weight as a candidate. The largest is a replicated welcome (weights and
    /// AdamW's two moments, 12 bytes per weight, and the mask bits): 13 per weight.
    public static func payloadBound(parameters: Int) -> Int { 13 * parameters + (64 << 10) }
}

/// A decoded frame: its header and the raw payload.
public struct Frame: Sendable {
    public var header: FrameHeader
    public var payload: [UInt8]

    public init(header: FrameHeader, payload: [UInt8]) {
        self.header = header; self.payload = payload
    }

    /// Header + payload, LZ4-compressed when `compress` and it makes the payload smaller.
    public func encoded(compress: Bool = true) -> [UInt8] {
        var h = header
        let body: [UInt8]
        if compress, let packed = LZ4.compress(payload) {
            body = packed
            h.flags |= FrameHeader.flagLZ4
        } else {
            body = payload
            h.flags &= ~FrameHeader.flagLZ4
        }
        h.rawSize = payload.count
        h.sentSize = body.count
        var w = ByteWriter(capacity: FrameHeader.size + body.count)
        w.u32(FrameHeader.magic)
        w.u16(FrameHeader.protocolVersion)
        w.u8(h.type.rawValue)
        w.u8(h.flags)
        w.u64(h.runID)
        w.u64(h.step)
        w.u32(h.maskVersion)
        w.u32(0)
        w.u64(h.layoutHash)
        w.u32(UInt32(h.rawSize))
        w.u32(UInt32(h.sentSize))
        w.u32(Checksum.crc32(body[...]))
        w.u32(Checksum.crc32(w.bytes[0 ..< 52]))
        w.raw(body)
        return w.bytes
    }

    /// The header of a frame whose header checks out (size, magic, version, checksum,
    /// type), without touching its payload: no payload checksum, no decompression. For a
    /// reader that only needs to know what arrived, as `svite bench cluster`'s simulated
    /// workers.
    public static func peek(_ bytes: [UInt8]) -> FrameHeader? { try? header(of: bytes).header }

    /// The header fields and the payload's declared CRC, the header checked.
    static func header(of bytes: [UInt8]) throws -> (header: FrameHeader, payloadCRC: UInt32) {
        guard bytes.count >= FrameHeader.size else { throw WireError.truncated(have: bytes.count, need: FrameHeader.size) }
        var r = ByteReader(bytes)
        let magic = try r.u32()
        guard magic == FrameHeader.magic else { throw WireError.badMagic(magic) }
        let version = try r.u16()
        guard version == FrameHeader.protocolVersion else { throw WireError.unsupportedVersion(version) }
        let typeCode = try r.u8(), flags = try r.u8()
        let runID = try r.u64(), step = try r.u64(), maskVersion = try r.u32()
        _ = try r.u32()
        let layout = try r.u64()
        let rawSize = Int(try r.u32()), sentSize = Int(try r.u32())
        let payloadCRC = try r.u32(), headerCRC = try r.u32()
        guard Checksum.crc32(bytes[0 ..< 52]) == headerCRC else { throw WireError.badHeaderChecksum }
        guard let type = MessageType(rawValue: typeCode) else { throw WireError.unknownMessageType(typeCode) }
        var header = FrameHeader(type: type, runID: runID, step: step, maskVersion: maskVersion, layoutHash: layout)
        header.flags = flags
        header.rawSize = rawSize
        header.sentSize = sentSize
        return (header, payloadCRC)
    }

    /// Checks everything in the order that keeps a hostile frame cheap: size, magic,
    /// version, header checksum, type, sizes against the bound, payload checksum, run and
    /// layout, and only then decompression.
    public static func decode(_ bytes: [UInt8], limits: FrameLimits) throws -> Frame {
        let (header, payloadCRC) = try header(of: bytes)
        let rawSize = header.rawSize, sentSize = header.sentSize
        guard sentSize == bytes.count - FrameHeader.size else {
            throw WireError.payloadSizeMismatch(declared: sentSize, actual: bytes.count - FrameHeader.size)
        }
        guard rawSize <= limits.maxRawBytes else { throw WireError.overSizeBound(declared: rawSize, bound: limits.maxRawBytes) }
        let body = bytes[FrameHeader.size...]
        guard Checksum.crc32(body) == payloadCRC else { throw WireError.badPayloadChecksum }
        if let want = limits.runID, header.runID != want, header.type != .join { throw WireError.wrongRun(expected: want, found: header.runID) }
        // A join is the one frame sent before the worker knows the run and the layout.
        if let want = limits.layoutHash, header.layoutHash != want, header.type != .join {
            throw WireError.wrongLayout(expected: want, found: header.layoutHash)
        }
        let payload: [UInt8]
        if header.compressed {
            payload = try LZ4.decompress(body, rawSize: rawSize)
        } else {
            guard rawSize == sentSize else { throw WireError.payloadSizeMismatch(declared: rawSize, actual: sentSize) }
            payload = Array(body)
        }
        return Frame(header: header, payload: payload)
    }
}
