import Config
import Logging

/// `communication.gradient_density: auto` decided: from which step, at which density, on
/// what evidence. Kept in checkpoints, so a resumed run goes on as the decision said.
public struct WireDecision: Codable, Sendable, Equatable {
    /// The first step the decision governs.
    public var step: Int
    /// The density from that step on (1: every value).
    public var density: Double
    /// The median share of a round the wire took, over `rounds` uncompressed rounds.
    public var wireShare: Double
    public var rounds: Int

    public init(step: Int, density: Double, wireShare: Double, rounds: Int) {
        self.step = step; self.density = density; self.wireShare = wireShare; self.rounds = rounds
    }
}

/// The wire's share of the latest rounds, each round's share of its time that was not its
/// slowest worker's computing.
struct WireShareMeter {
    /// The rounds a decision needs, and the most it looks at (the latest ones: the link as
    /// it is when top-k would start).
    static let needed = 8
    static let kept = 64
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

    /// Auto's decision before step `step`: top-k where the wire takes `autoWireShare` of a
    /// round or more, every value otherwise; nil while too few rounds were measured.
    func decision(step: Int, target: Double) -> WireDecision? {
        guard let m = median else { return nil }
        return WireDecision(step: step, density: m >= CommunicationConfig.autoWireShare ? target : 1, wireShare: m, rounds: shares.count)
    }
}

extension Trainer {
    /// Applies auto's decision: the schedule from `d.step` on, the variance's freeze and its
    /// tracking with it.
    func adopt(_ d: WireDecision) {
        compression = compression.decided(compress: d.density < 1, at: d.step)
        server.varianceFreezeStep = compression.activeFreezeStep
        if !compression.tracksVariance(config.communication) { server.varianceTracker = nil }
        wireDecision = d
    }

    /// Takes auto's decision if it is due before step `step` (the dense warm-up is over and
    /// enough rounds were measured), logs it and writes it to the metrics.
    func decideDensityIfDue(step: Int, meter: WireShareMeter, metrics: MetricsLog) {
        guard compression.undecided, step >= compression.denseSteps,
              let d = meter.decision(step: step, target: compression.target) else { return }
        adopt(d)
        let share = "the wire took \(Int((d.wireShare * 100).rounded()))% of a step (median of \(d.rounds) rounds)"
        let what = d.density < 1
            ? "\(share), at least \(Int(CommunicationConfig.autoWireShare * 100))%: "
                + (compression.summary(config.communication) ?? "top-k \(d.density * 100)% from step \(d.step)")
            : "\(share), under \(Int(CommunicationConfig.autoWireShare * 100))%: every value for the rest of the run"
        log.notice("communication.gradient_density auto: \(what)")
        var record = MetricsRecord(kind: .wire, step: step)
        record.reason = what
        record.wireShare = d.wireShare
        record.gradientDensity = d.density
        metrics.write(record)
    }
}
