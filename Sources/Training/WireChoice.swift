import Compression
import Config
import Logging

/// `communication.gradient_density: auto` decided: from which step, at which density, on
/// what evidence. Kept in checkpoints, so a resumed run goes on as the decision said.
public struct WireDecision: Codable, Sendable, Equatable {
    /// The first step the decision governs.
    public var step: Int
    /// The density from the dense warm-up's end (1: every value).
    public var density: Double
    /// How every value of an uncompressed step travels from `step` on, both ways: fp32, or
    /// int8 with each side keeping its rounding (the worker in its residual, the
    /// coordinator in the update's). Compressed steps' updates then go in bf16.
    public var codec: ValueCodec
    /// The median share of a round the wire took, over `rounds` uncompressed rounds.
    public var wireShare: Double
    public var rounds: Int

    public init(step: Int, density: Double, codec: ValueCodec, wireShare: Double, rounds: Int) {
        self.step = step; self.density = density; self.codec = codec; self.wireShare = wireShare; self.rounds = rounds
    }

    enum CodingKeys: String, CodingKey { case step, density, codec, halfPrecision, wireShare, rounds }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        step = try c.decode(Int.self, forKey: .step)
        density = try c.decode(Double.self, forKey: .density)
        // Checkpoints of 0.4 said bf16 or not.
        codec = try c.decodeIfPresent(ValueCodec.self, forKey: .codec)
            ?? (try c.decodeIfPresent(Bool.self, forKey: .halfPrecision) == true ? .bf16 : .fp32)
        wireShare = try c.decode(Double.self, forKey: .wireShare)
        rounds = try c.decode(Int.self, forKey: .rounds)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(step, forKey: .step); try c.encode(density, forKey: .density); try c.encode(codec, forKey: .codec)
        try c.encode(wireShare, forKey: .wireShare); try c.encode(rounds, forKey: .rounds)
    }
}

/// The wire's share of the latest rounds, each round's share of its time that was not its
/// slowest worker's computing.
struct WireShareMeter {
    /// The rounds a decision needs, and the most it looks at (the latest ones: the link as
    /// it is when top-k would start).
    static let needed = 8
    static let kept = 64
    /// Rounds that decide before the dense warm-up ends, so a slow wire's remaining
    /// uncompressed steps go in bf16.
    static let decisive = 16
    private(set) var shares: [Double] = []

    mutating func record(_ t: RoundTiming) {
        shares.append(t.wireShare)
        if shares.count > Self.kept { shares.removeFirst(shares.count - Self.kept) }
    }

    /// The median share (nil before `needed` rounds).
    var median: Double? {
        guard shares.count >= Self.needed else { return nil }
        let s = shares.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    /// Auto's decision before step `step`: every value, in bf16 both ways where the wire
    /// takes `autoBF16Share` of a round or more, int8 from `autoInt8Share`, int4 from
    /// `autoInt4Share`; nil
    /// while too few rounds were measured (fewer than `decisive` before the dense warm-up's
    /// end at `denseEnd`, `needed` after it). `pinned`: communication.dense_values when not
    /// auto, the decision's codec whatever the wire.
    func decision(step: Int, denseEnd: Int, pinned: ValueCodec? = nil) -> WireDecision? {
        guard shares.count >= Self.decisive || step >= denseEnd, let m = median else { return nil }
        let codec: ValueCodec = m >= CommunicationConfig.autoInt4Share ? .int4 : m >= CommunicationConfig.autoInt8Share ? .int8
            : m >= CommunicationConfig.autoBF16Share ? .bf16 : .fp32
        return WireDecision(step: step, density: 1, codec: pinned ?? codec, wireShare: m, rounds: shares.count)
    }
}

extension Trainer {
    /// Applies auto's decision: the schedule from `d.step` on, the variance's freeze and its
    /// tracking with it, and the codec of uncompressed steps from `d.step`, both ways.
    func adopt(_ d: WireDecision) {
        compression = compression.decided(compress: d.density < 1, at: d.step)
        server.varianceFreezeStep = compression.activeFreezeStep
        if !compression.tracksVariance(config.communication) { server.varianceTracker = nil }
        wireDecision = d
    }

    /// The codec of uncompressed steps and the first step it governs (nil: fp32 values, or
    /// the coordinator's --gradient-codec up): communication.dense_values, else auto's
    /// decision. A run without a wire (its gradients computed in process) has none.
    var denseValues: (codec: ValueCodec, from: Int)? {
        guard source.compressesGradients else { return nil }
        if let pinned = config.communication.denseValues { return pinned == .fp32 ? nil : (pinned, 0) }
        guard let d = wireDecision, d.codec != .fp32 else { return nil }
        return (d.codec, d.step)
    }

    /// The codec step `step`'s uncompressed values go up in (nil: the coordinator's own).
    func denseCodec(step: Int) -> ValueCodec? {
        guard let v = denseValues, step >= v.from, compression.compression(step: step) == .dense else { return nil }
        return v.codec
    }

    /// The codec step `step`'s update goes down in: the dense values' for uncompressed
    /// steps, bf16 for compressed ones when they are not fp32 (an int8 residual would
    /// spread a sparse update over every entry it ever touched).
    func updateCodec(step: Int) -> ValueCodec {
        guard let v = denseValues, step >= v.from else { return .fp32 }
        return compression.compression(step: step) == .dense ? v.codec : .bf16
    }

    /// Takes auto's decision if it is due before step `step` (enough rounds measured: see
    /// `WireShareMeter.decision`), logs it and writes it to the metrics.
    func decideDensityIfDue(step: Int, meter: WireShareMeter, metrics: MetricsLog) {
        guard compression.undecided,
              let d = meter.decision(step: step, denseEnd: compression.denseSteps, pinned: config.communication.denseValues) else { return }
        adopt(d)
        let share = "the wire took \(Int((d.wireShare * 100).rounded()))% of a step (median of \(d.rounds) rounds)"
        let what = d.codec == .fp32 ? "\(share): every value in fp32 for the rest of the run"
            : "\(share): every value in \(d.codec.rawValue) both ways for the rest of the run"
                + (d.codec.needsFeedback ? ", each side keeping its rounding for the next step" : "")
        log.notice("communication.gradient_density auto: \(what)")
        var record = MetricsRecord(kind: .wire, step: step)
        record.reason = what
        record.wireShare = d.wireShare
        record.gradientDensity = d.density
        metrics.write(record)
    }
}
