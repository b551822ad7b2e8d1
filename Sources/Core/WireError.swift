/// Why bytes from another process (a frame, a payload) were refused. Every case is a reason to count and drop the frame, never to
/// stop the receiver.
public enum WireError: Error, Equatable, CustomStringConvertible {
    case truncated(have: Int, need: Int)
    case badMagic(UInt32)
    case unsupportedVersion(UInt16)
    case badHeaderChecksum
    case unknownMessageType(UInt8)
    case payloadSizeMismatch(declared: Int, actual: Int)
    case overSizeBound(declared: Int, bound: Int)
    case badPayloadChecksum
    case corruptCompression(String)
    case wrongRun(expected: UInt64, found: UInt64)
    case wrongLayout(expected: UInt64, found: UInt64)
    case malformedPayload(String)
    /// NaN or infinity where numbers must be finite (a diverged or broken worker).
    case nonFinite(String)

    public var description: String {
        switch self {
        case let .truncated(have, need): return "truncated frame: \(have) bytes, need \(need)"
        case let .badMagic(m): return "bad magic 0x\(String(m, radix: 16)) (not an svite frame)"
        case let .unsupportedVersion(v): return "protocol version \(v) (another svite version's)"
        case .badHeaderChecksum: return "header checksum mismatch"
        case let .unknownMessageType(t): return "unknown message type \(t)"
        case let .payloadSizeMismatch(d, a): return "payload declared as \(d) bytes, frame carries \(a)"
        case let .overSizeBound(d, b): return "declared raw size \(d) bytes is over the bound of \(b)"
        case .badPayloadChecksum: return "payload checksum mismatch"
        case let .corruptCompression(why): return "corrupt LZ4 payload: \(why)"
        case let .wrongRun(e, f): return "frame of run \(String(f, radix: 16)), this is run \(String(e, radix: 16))"
        case let .wrongLayout(e, f): return "layout hash \(String(f, radix: 16)) differs from \(String(e, radix: 16)) (another model config)"
        case let .malformedPayload(why): return "malformed payload: \(why)"
        case let .nonFinite(what): return "\(what) not finite (NaN or infinity): refused, so it cannot reach the weights"
        }
    }
}
