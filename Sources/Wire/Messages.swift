import Compression
import Core
import Foundation
import Model
import Sparsity

/// worker → coordinator: who is asking to join.
public struct JoinMessage: Codable, Sendable, Equatable {
    public var name: String
    public var host: String
    public var pid: Int32
    public var threads: Int
    public init(name: String, host: String, pid: Int32, threads: Int) {
        self.name = name; self.host = host; self.pid = pid; self.threads = threads
    }

    /// What is wrong with a join (nil: nothing): a name of 1 to 200 bytes with no control
    /// or bidirectional-override characters (it goes to logs and the status), a host of at
    /// most 255, a positive pid and 1 to 4096 threads.
    public var problem: String? {
        func bad(_ s: String) -> Bool { s.unicodeScalars.contains { $0.properties.generalCategory == .control || $0.properties.generalCategory == .format } }
        if name.isEmpty || name.utf8.count > 200 { return "a worker name must be 1 to 200 bytes (got \(name.utf8.count))" }
        if bad(name) { return "the worker name \(name.escapedForLog) holds control or formatting characters" }
        if host.utf8.count > 255 || bad(host) { return "the host \(String(host.prefix(64)).escapedForLog) is not a host name" }
        if pid <= 0 { return "pid \(pid) is not a process id" }
        if !(1 ... 4096).contains(threads) { return "\(threads) threads (1 to 4096)" }
        return nil
    }
}

/// coordinator → worker: the run it joined, its rank and the config; the weights follow.
public struct WelcomeInfo: Codable, Sendable, Equatable {
    public var rank: Int
    public var runID: UInt64
    public var config: String
    public var heartbeatSeconds: Double
    public var gradientCodec: ValueCodec
    /// The downlink sends updates, not weights: the welcome carries the optimizer's state
    /// too and the worker keeps a replica of it (nil: weights each step).
    public var replicated: Bool?
    public init(rank: Int, runID: UInt64, config: String, heartbeatSeconds: Double, gradientCodec: ValueCodec, replicated: Bool? = nil) {
        self.rank = rank; self.runID = runID; self.config = config
        self.heartbeatSeconds = heartbeatSeconds; self.gradientCodec = gradientCodec
        self.replicated = replicated
    }
}

/// The optimizer's part of a replicated welcome: update count, whether the variance is
/// frozen, and its moment buffers in layout order.
public struct OptimizerSnapshot {
    public var updates: Int
    public var varianceFrozen: Bool
    public var buffers: [UnsafePointer<Float>]
    public init(updates: Int, varianceFrozen: Bool, buffers: [UnsafePointer<Float>]) {
        self.updates = updates; self.varianceFrozen = varianceFrozen; self.buffers = buffers
    }
}

/// The summary numbers that travel with a gradient.
public struct GradientSummary: Sendable, Equatable {
    public var images: UInt32
    public var lossSum: Double
    public var correct: UInt32
    /// The worker's own seconds on the step, from the step frame's arrival to its answer's
    /// bytes (replay, compute, encode): the round's time less this is the wire's.
    public var computeSeconds: Float
    public init(images: UInt32, lossSum: Double, correct: UInt32, computeSeconds: Float = 0) {
        self.images = images; self.lossSum = lossSum; self.correct = correct; self.computeSeconds = computeSeconds
    }
}

/// Payload encoders and decoders. Values are always checked against the count the
/// receiver expects (its layout), so a frame cannot make it write out of bounds.
public enum Payload {
    static let json: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }()

    public static func encodeJSON<T: Encodable>(_ value: T) -> [UInt8] {
        (try? Array(json.encode(value))) ?? []
    }

    public static func decodeJSON<T: Decodable>(_ type: T.Type, _ bytes: some Collection<UInt8>) throws -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(bytes))
        } catch {
            throw WireError.malformedPayload("\(T.self): \(error)")
        }
    }

    // welcome: blob info JSON, u32 n, n fp32 weights, [sparse runs: u32 mask version
    // (noMaskVersion: none), blob mask bits], [replicated, with weights: u32 updates,
    // u8 frozen, u32 buffers, n fp32 values each]

    /// The mask version of a sparse run's welcome that carries no mask yet.
    public static let noMaskVersion = UInt32.max

    public static func welcome(_ info: WelcomeInfo, params: UnsafePointer<Float>?, count: Int,
                               mask: (version: UInt32, bits: [UInt8])? = nil, sparse: Bool = false,
                               optimizer: OptimizerSnapshot? = nil) -> [UInt8] {
        var w = ByteWriter(capacity: 4 * count * (1 + (optimizer?.buffers.count ?? 0)) + 1024)
        w.blob(encodeJSON(info))
        w.u32(UInt32(count))
        if let params { w.floats(params, count: count) }
        if let mask {
            w.u32(mask.version); w.blob(mask.bits)
        } else if sparse {
            w.u32(noMaskVersion); w.blob([])
        }
        if let o = optimizer, params != nil {
            w.u32(UInt32(o.updates)); w.u8(o.varianceFrozen ? 1 : 0)
            w.u32(UInt32(o.buffers.count))
            for b in o.buffers { w.floats(b, count: count) }
        }
        return w.bytes
    }

    /// The info, and the reader positioned at the weights (count first).
    public static func welcomeInfo(_ payload: [UInt8]) throws -> (WelcomeInfo, ByteReader) {
        var r = ByteReader(payload)
        let info = try decodeJSON(WelcomeInfo.self, try r.blob("welcome info"))
        return (info, r)
    }

    public static func values(_ r: inout ByteReader, codec: ValueCodec = .fp32, into out: UnsafeMutablePointer<Float>, count: Int) throws {
        let n = Int(try r.u32("value count"))
        guard n == count else { throw WireError.malformedPayload("\(n) values, this layout has \(count)") }
        try codec.decode(&r, into: out, count: count)
        try r.expectEnd("values")
    }

    // grads: u32 images, f64 loss sum, u32 correct, f32 compute seconds, GradientValues (what the worker's
    //        compressor wrote), u8 mean squares (0 none; 1: u32 tensors, fp32 mean square
    //        per tensor), reply:
    //        u8 0 none
    //           1 grow candidates: u32 layers, per layer: indices (delta varints), fp32 values
    //           2 unit scores (S2ViTE, SSP): u32 n, fp32 values

    /// A gradient frame: the summary, the values `values` writes (a `GradientEncoder`),
    /// the worker's mean squares per tensor (for `VarianceTracker`) and the reply.
    public static func grads(_ s: GradientSummary, reply: StepReply = .none, meanSquares: [Float]? = nil, capacity: Int = 0,
                             values: (inout ByteWriter) throws -> Void) rethrows -> [UInt8] {
        var w = ByteWriter(capacity: 64 + capacity + 4 * (meanSquares?.count ?? 0))
        w.u32(s.images); w.f64(s.lossSum); w.u32(s.correct); w.f32(s.computeSeconds)
        try values(&w)
        if let m = meanSquares {
            w.u8(1)
            w.u32(UInt32(m.count))
            m.withUnsafeBufferPointer { w.floats($0.baseAddress ?? UnsafePointer(bitPattern: 4)!, count: m.count) }
        } else {
            w.u8(0)
        }
        reply.encode(into: &w)
        return w.bytes
    }

    /// Every value, in `codec` (tests and benchmarks; workers go through their encoder).
    public static func grads(_ s: GradientSummary, codec: ValueCodec, values: UnsafePointer<Float>, count: Int,
                             reply: StepReply = .none, meanSquares: [Float]? = nil) -> [UInt8] {
        grads(s, reply: reply, meanSquares: meanSquares, capacity: codec.bytesPerValue * count) {
            GradientValues.encodeDense(values, count: count, codec: codec, into: &$0)
        }
    }

    /// Top-k entries, in `codec`.
    public static func sparseGrads(_ s: GradientSummary, codec: ValueCodec, sparse: SparseGradient, layout: ParameterLayout,
                                   reply: StepReply = .none, meanSquares: [Float]? = nil) -> [UInt8] {
        grads(s, reply: reply, meanSquares: meanSquares, capacity: (codec.bytesPerValue + 2) * sparse.entries) {
            GradientValues.encodeSparse(sparse, codec: codec, layout: layout, into: &$0)
        }
    }

    /// Stamps a gradient payload's compute seconds, last thing before it is sent, so they
    /// count its encoding too.
    public static func stampComputeSeconds(_ payload: inout [UInt8], _ seconds: Double) {
        let at = 4 + 8 + 4  // after images, loss sum, correct
        guard payload.count >= at + 4 else { return }
        let bits = Float(max(0, seconds)).bitPattern.littleEndian
        withUnsafeBytes(of: bits) { b in for i in 0 ..< 4 { payload[at + i] = b[i] } }
    }

    public struct DecodedGrads: Sendable {
        public var summary: GradientSummary
        public var reply: StepReply
        /// The values as top-k entries (nil: every value went to `into`).
        public var sparse: SparseGradient?
        /// The worker's mean square per tensor (nil: it sent none).
        public var meanSquares: [Float]? = nil
    }

    /// The summary and the reply, which must be the one `expecting` names; `count`
    /// values (the receiver's expectation) go to `into`, or, for a sparse frame (which
    /// needs `layout`), the top-k entries to `sparse`.
    public static func decodeGrads(_ payload: [UInt8], into out: UnsafeMutablePointer<Float>, count: Int,
                                   expecting: ExpectedReply = .none, layout: ParameterLayout? = nil) throws -> DecodedGrads {
        var r = ByteReader(payload)
        let s = GradientSummary(images: try r.u32("images"), lossSum: try r.f64("loss sum"), correct: try r.u32("correct"),
                                computeSeconds: try r.f32("compute seconds"))
        // A NaN loss is a value, not a framing fault: the aggregator refuses it as non-finite.
        guard s.correct <= s.images, s.computeSeconds.isFinite, s.computeSeconds >= 0 else { throw WireError.malformedPayload("summary \(s)") }
        let sparse = try GradientValues.decode(&r, into: out, count: count, layout: layout)
        var meanSquares: [Float]? = nil
        switch try r.u8("mean squares") {
        case 0: break
        case 1:
            let n = Int(try r.u32("mean square count"))
            guard let layout, n == layout.tensors.count else {
                throw WireError.malformedPayload("\(n) mean squares, this layout has \(layout.map { "\($0.tensors.count)" } ?? "no") tensors")
            }
            var v = [Float](repeating: 0, count: n)
            try v.withUnsafeMutableBufferPointer { try r.floats(into: $0.baseAddress!, count: n) }
            guard v.allSatisfy({ $0.isFinite && $0 >= 0 }) else { throw WireError.nonFinite("mean squares") }
            meanSquares = v
        case let m:
            throw WireError.malformedPayload("mean squares flag \(m)")
        }
        let reply = try StepReply.decode(&r, expecting: expecting)
        try r.expectEnd("grads")
        return DecodedGrads(summary: s, reply: reply, sparse: sparse, meanSquares: meanSquares)
    }

    // leave, stop, reject: a reason string

    public static func reason(_ text: String) -> [UInt8] {
        var w = ByteWriter()
        w.string(text)
        return w.bytes
    }

    public static func decodeReason(_ payload: [UInt8]) throws -> String {
        var r = ByteReader(payload)
        let s = try r.string("reason")
        try r.expectEnd("reason")
        return s
    }
}

/// A topology change, or the whole mask, for the prunable layers.
public enum MaskUpdate: Sendable, Equatable {
    /// Per prunable layer, the indices switched off and on, taking version − 1 to version.
    case change(version: UInt32, layers: [LayerChange])
    /// The whole mask as bits (for a worker more than one version behind, and at welcome).
    case bitmap(version: UInt32, bits: [UInt8])

    public struct LayerChange: Sendable, Equatable {
        public var off: [UInt32]
        public var on: [UInt32]
        public init(off: [UInt32], on: [UInt32]) { self.off = off; self.on = on }
    }

    public var version: UInt32 {
        switch self {
        case let .change(v, _), let .bitmap(v, _): return v
        }
    }

    func encode(into w: inout ByteWriter) {
        switch self {
        case let .change(v, layers):
            w.u8(0); w.u32(v); w.u32(UInt32(layers.count))
            for l in layers { IndexCodec.encode(l.off, into: &w); IndexCodec.encode(l.on, into: &w) }
        case let .bitmap(v, bits):
            w.u8(1); w.u32(v); w.blob(bits)
        }
    }

    static func decode(_ r: inout ByteReader, maxLayers: Int, maxIndices: Int) throws -> MaskUpdate {
        let kind = try r.u8("mask update kind")
        let v = try r.u32("mask version")
        switch kind {
        case 0:
            let n = Int(try r.u32("mask layers"))
            guard n <= maxLayers else { throw WireError.malformedPayload("\(n) mask layers, at most \(maxLayers)") }
            let bound = UInt32(clamping: maxIndices)
            return .change(version: v, layers: try (0 ..< n).map { _ in
                LayerChange(off: try IndexCodec.decode(&r, bound: bound, maxCount: maxIndices),
                            on: try IndexCodec.decode(&r, bound: bound, maxCount: maxIndices))
            })
        case 1:
            let bits = try r.blob("mask bits")
            guard bits.count <= (maxIndices * maxLayers + 7) / 8 + 1 else { throw WireError.malformedPayload("mask of \(bits.count) bytes") }
            return .bitmap(version: v, bits: Array(bits))
        default:
            throw WireError.malformedPayload("mask update kind \(kind)")
        }
    }
}
