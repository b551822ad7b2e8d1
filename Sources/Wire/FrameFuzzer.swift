import Core
import Model
import Sparsity
import Steps

/// Random and mutated frames for the decoders: valid frames of every message type with
/// bits flipped, cut short, replaced by noise, or with the payload or header changed and
/// re-signed (so the checks behind the checksums are reached too). Every frame must be
/// decoded or refused with a WireError; anything else (another error, a crash) is a bug.
/// Behind `svite fuzz` and the wire tests.
public struct FrameFuzzer {
    public struct Report: Sendable, Equatable {
        public var frames = 0
        /// Frames whose header and payload decoded.
        public var accepted = 0
        /// Frames refused with a WireError.
        public var refused = 0
        /// Errors that are not WireErrors (each a bug), at most the first 10.
        public var otherErrors: [String] = []
    }

    public let valueCount: Int
    public let limits: FrameLimits
    private var state: UInt64
    private let seeds: [[UInt8]]

    public init(seed: UInt64, valueCount: Int = 64) {
        self.valueCount = valueCount
        limits = FrameLimits(maxRawBytes: 1 << 16)
        state = seed
        var values = [Float](repeating: 0, count: valueCount)
        var s = seed ^ 0x5EED
        for i in stride(from: 0, to: valueCount, by: 5) { s = StreamSeed.mix(s, UInt64(i)); values[i] = Float(s >> 40) / Float(1 << 24) * 2 - 1 }
        let n = valueCount
        seeds = MessageType.allCases.map { t in
            let payload: [UInt8]
            switch t {
            case .grads:
                payload = Payload.grads(GradientSummary(images: 2, lossSum: 1, correct: 1), codec: .bf16, values: values, count: n)
            case .params:
                let order = StepOrder(request: .growCandidates(multiplier: 2, perLayer: [1, 2]),
                                      selector: SelectorSchedule(temperature: 1, noiseScale: 0.5))
                payload = Payload.params(StepFrame(order: order, shares: .one(Assignment(epoch: 0, start: 0, count: 2))), values: values, count: n)
            case .welcome:
                payload = Payload.welcome(WelcomeInfo(rank: 0, runID: 42, config: "x", heartbeatSeconds: 1, gradientCodec: .fp32), params: values, count: n)
            case .join:
                payload = Payload.encodeJSON(JoinMessage(name: "a", host: "b", pid: 1, threads: 1))
            default:
                payload = Payload.reason("why")
            }
            return Frame(header: FrameHeader(type: t, runID: 42, step: 7, maskVersion: 3, layoutHash: 0xABCD), payload: payload).encoded()
        }
    }

    private mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return StreamSeed.mix(state, 0)
    }
    private mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(n, 1))) }

    /// The frame's header CRC recomputed (bytes 52..<56 over 0..<52).
    static func resign(_ b: [UInt8]) -> [UInt8] {
        guard b.count >= 56 else { return b }
        var out = b
        let crc = Checksum.crc32(out[0 ..< 52])
        withUnsafeBytes(of: crc.littleEndian) { for i in 0 ..< 4 { out[52 + i] = $0[i] } }
        return out
    }

    /// The payload CRC (bytes 48..<52 over 56...) and then the header CRC recomputed.
    static func resignPayload(_ b: [UInt8]) -> [UInt8] {
        guard b.count >= 56 else { return b }
        var out = b
        let crc = Checksum.crc32(out[56...])
        withUnsafeBytes(of: crc.littleEndian) { for i in 0 ..< 4 { out[48 + i] = $0[i] } }
        return resign(out)
    }

    /// The `k`-th fuzzed frame (the kind of mutation cycles with k).
    public mutating func frame(_ k: Int) -> [UInt8] {
        var b = seeds[below(seeds.count)]
        switch k % 5 {
        case 0: for _ in 0 ..< 1 + below(4) { b[below(b.count)] ^= UInt8(1 << below(8)) }
        case 1: b = Array(b.prefix(below(b.count + 1)))
        case 2: b = (0 ..< below(200)).map { _ in UInt8(truncatingIfNeeded: next()) }
        case 3:
            for _ in 0 ..< 1 + below(4) { b[56 + below(b.count - 56)] = UInt8(truncatingIfNeeded: next()) }
            b = Self.resignPayload(b)
        default:
            b[below(52)] = UInt8(truncatingIfNeeded: next())
            b = Self.resign(b)
        }
        return b
    }

    /// Decodes one frame as the receivers do (header, then the payload of its type).
    public func check(_ bytes: [UInt8], into out: UnsafeMutablePointer<Float>, report: inout Report) {
        report.frames += 1
        do {
            let f = try Frame.decode(bytes, limits: limits)
            let n = valueCount
            switch f.header.type {
            case .grads: _ = try Payload.decodeGrads(f.payload, into: out, count: n)
            case .params: _ = try Payload.decodeParams(f.payload, into: out, count: n, maxLayers: 2, maxIndices: n)
            case .welcome: var (_, r) = try Payload.welcomeInfo(f.payload); try Payload.values(&r, into: out, count: n)
            case .join: _ = try Payload.decodeJSON(JoinMessage.self, f.payload)
            default: _ = try Payload.decodeReason(f.payload)
            }
            report.accepted += 1
        } catch is WireError {
            report.refused += 1
        } catch {
            if report.otherErrors.count < 10 { report.otherErrors.append("\(error)") }
        }
    }

    /// `frames` fuzzed frames through the decoders.
    public static func run(frames: Int, seed: UInt64, progress: (Int) -> Void = { _ in }) -> Report {
        var fuzzer = FrameFuzzer(seed: seed)
        var report = Report()
        var out = [Float](repeating: 0, count: fuzzer.valueCount)
        out.withUnsafeMutableBufferPointer { buffer in
            for k in 0 ..< frames {
                fuzzer.check(fuzzer.frame(k), into: buffer.baseAddress!, report: &report)
                if k % 100_000 == 99_999 { progress(k + 1) }
            }
        }
        return report
    }
}
