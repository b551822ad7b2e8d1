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
    /// Every value in bf16 both ways from `step` (the merged gradient rounded before the update).
    public var halfPrecision: Bool
    /// The median share of a round the wire took, over `rounds` uncompressed rounds.
    public var wireShare: Double
    public var rounds: Int

    public init(step: Int, density: Double, halfPrecision: Bool, wireShare: Double, rounds: Int) {
        self.step = step; self.density = density; self.halfPrecision = halfPrecision; self.wireShare = wireShare; self.rounds = rounds
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

    /// Auto's decision before step `step`: bf16 where the wire takes `autoHalfShare` of a
    /// round or more, top-k too where it takes `autoWireShare`; nil while too few rounds
    /// were measured (fewer than `decisive` before the dense warm-up's end at `denseEnd`,
    /// `needed` after it).
    func decision(step: Int, denseEnd: Int, target: Double) -> WireDecision? {
        guard shares.count >= Self.decisive || step >= denseEnd, let m = median else { return nil }
        return WireDecision(step: step, density: m >= CommunicationConfig.autoWireShare ? target : 1,
                            halfPrecision: m >= CommunicationConfig.autoHalfShare, wireShare: m, rounds: shares.count)
    }
}

extension Trainer {
    /// Applies auto's decision: the schedule from `d.step` on, the variance's freeze and its
    /// tracking with it; a slow wire also carries every value in bf16 from `d.step`, both
    /// ways (the merged gradient rounded before the update, so replicas still follow).
    func adopt(_ d: WireDecision) {
        compression = compression.decided(compress: d.density < 1, at: d.step)
        server.varianceFreezeStep = compression.activeFreezeStep
        if !compression.tracksVariance(config.communication) { server.varianceTracker = nil }
        server.halfPrecisionUpdates = d.halfPrecision
        wireDecision = d
    }

    /// The codec step `step`'s uncompressed values go in (nil: the coordinator's own).
    func denseCodec(step: Int) -> ValueCodec? {
        server.halfPrecisionUpdates && compression.compression(step: step) == .dense ? .bf16 : nil
    }

    /// Takes auto's decision if it is due before step `step` (enough rounds measured: see
    /// `WireShareMeter.decision`), logs it and writes it to the metrics.
    func decideDensityIfDue(step: Int, meter: WireShareMeter, metrics: MetricsLog) {
        guard compression.undecided,
              let d = meter.decision(step: step, denseEnd: compression.denseSteps, target: compression.target) else { return }
        adopt(d)
        let share = "the wire took \(Int((d.wireShare * 100).rounded()))% of a step (median of \(d.rounds) rounds)"
        let what: String
        if d.density < 1 {
            let half = compression.denseSteps > d.step ? "every value in bf16 both ways until step \(compression.denseSteps), then " : "bf16 updates down, "
            what = "\(share), at least \(Int(CommunicationConfig.autoWireShare * 100))%: " + half
                + (compression.summary(config.communication) ?? "top-k \(d.density * 100)% from step \(d.step)")
        } else if d.halfPrecision {
            what = "\(share), at least \(Int(CommunicationConfig.autoHalfShare * 100))% and under \(Int(CommunicationConfig.autoWireShare * 100))%: "
                + "every value in bf16 both ways for the rest of the run"
        } else {
            what = "\(share), under \(Int(CommunicationConfig.autoHalfShare * 100))%: every value in fp32 for the rest of the run"
        }
        log.notice("communication.gradient_density auto: \(what)")
        var record = MetricsRecord(kind: .wire, step: step)
        record.reason = what
        record.wireShare = d.wireShare
        record.gradientDensity = d.density
        metrics.write(record)
    }
}
