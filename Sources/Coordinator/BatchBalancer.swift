/// How the global batch is divided among the workers.
public enum BatchBalance: String, Sendable, CaseIterable {
    /// Equal shares, whatever each worker's speed.
    case equal
    /// Shares proportional to each worker's measured images per second, so a mixed cluster
    /// is not paced by its slowest machine.
    case throughput
}

/// Chooses each worker's share of the step's images. The shares are integer weights (per
/// mille of the batch) that change only at re-balance steps and only when some worker's
/// weight would move by more than `hysteresis`, so a cluster of equal machines keeps equal
/// shares and the split is a deterministic function of the weight vector in between.
/// No sockets: it is given (rank, measured throughput) pairs.
struct BatchBalancer {
    let mode: BatchBalance
    /// Steps between re-balances.
    var interval = 20
    /// The smallest change of a weight (per mille) that is acted on: 10% of the batch, so
    /// the ±20% noise of shared VMs does not move shares back and forth (seen with 5%).
    var hysteresis = 100
    /// Per rank: the current weight.
    private(set) var weights: [Int: Int] = [:]

    init(mode: BatchBalance) { self.mode = mode }

    /// The weights of `members` (rank, images per second if measured) for `step`, in order.
    mutating func shares(step: Int, members: [(rank: Int, throughput: Double?)]) -> [Int] {
        let equal = 1000 / max(members.count, 1)
        guard mode == .throughput else { return members.map { _ in max(equal, 1) } }
        // Members new to the split get the mean weight of the others (equal at first).
        let known = members.compactMap { weights[$0.rank] }
        let fill = known.isEmpty ? equal : known.reduce(0, +) / known.count
        var current = members.map { weights[$0.rank] ?? fill }
        if step % interval == 0, let target = Self.proportional(members.map(\.throughput)),
           zip(current, target).contains(where: { abs($0 - $1) > hysteresis }) {
            current = target
        }
        weights = Dictionary(uniqueKeysWithValues: zip(members.map(\.rank), current))
        return current.map { max($0, 1) }
    }

    /// Weights summing to about 1000 in proportion to the throughputs; members not yet
    /// measured count as the mean of the measured ones. Nil when none is measured.
    static func proportional(_ throughputs: [Double?]) -> [Int]? {
        let measured = throughputs.compactMap { $0 }.filter { $0.isFinite && $0 > 0 }
        guard !measured.isEmpty else { return nil }
        let mean = measured.reduce(0, +) / Double(measured.count)
        let rates = throughputs.map { t in t.flatMap { $0.isFinite && $0 > 0 ? $0 : nil } ?? mean }
        let total = rates.reduce(0, +)
        return rates.map { max(1, Int(($0 / total * 1000).rounded())) }
    }
}
