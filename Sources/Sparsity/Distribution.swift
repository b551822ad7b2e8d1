/// How many weights of each prunable layer are active at a given overall density.
public enum SparsityDistribution: String, Sendable, Codable, CaseIterable {
    /// Erdős–Rényi (ERK): density_l ∝ (Σ dims) / (Π dims), scaled so the total hits the
    /// budget; layers that would exceed density 1 are dense and the scale is solved again.
    case erk
    /// The same density in every layer.
    case uniform

    /// Exact active counts per tensor name, summing to round(density · total) exactly.
    public func counts(_ tensors: [(name: String, shape: [Int])], density: Double) -> [String: Int] {
        precondition(density > 0 && density <= 1, "SparsityDistribution: density \(density)")
        let sizes = tensors.map { $0.shape.reduce(1, *) }
        let total = sizes.reduce(0, +)
        let budget = Int((density * Double(total)).rounded())
        var raw = [Double](repeating: density, count: tensors.count)
        if self == .erk {
            // RigL's procedure: ε·raw_l is layer l's density; dense layers leave the solve.
            let score = tensors.map { t in Double(t.shape.reduce(0, +)) / Double(t.shape.reduce(1, *)) }
            var dense = Set<Int>()
            while true {
                var rhs = 0.0, divisor = 0.0
                for (l, n) in sizes.enumerated() {
                    if dense.contains(l) { rhs -= Double(n) * (1 - density) } else {
                        rhs += Double(n) * density
                        divisor += score[l] * Double(n)
                    }
                }
                let eps = rhs / divisor
                let live = sizes.indices.filter { !dense.contains($0) }
                guard let top = live.map({ score[$0] }).max() else { break }
                if top * eps > 1 {
                    for l in live where score[l] == top { dense.insert(l) }
                    continue
                }
                for l in sizes.indices { raw[l] = dense.contains(l) ? 1 : eps * score[l] }
                break
            }
        }
        // Largest-remainder rounding so the counts sum to the budget exactly.
        var counts = sizes.indices.map { min(sizes[$0], Int((raw[$0] * Double(sizes[$0])).rounded(.down))) }
        var left = budget - counts.reduce(0, +)
        let order = sizes.indices.sorted { a, b in
            let fa = raw[a] * Double(sizes[a]) - Double(counts[a]), fb = raw[b] * Double(sizes[b]) - Double(counts[b])
            return fa != fb ? fa > fb : a < b
        }
        var k = 0
        while left > 0 && k < 10 * order.count {
            let l = order[k % order.count]
            if counts[l] < sizes[l] { counts[l] += 1; left -= 1 }
            k += 1
        }
        while left < 0 {
            for l in order.reversed() where counts[l] > 0 && left < 0 { counts[l] -= 1; left += 1 }
        }
        return Dictionary(uniqueKeysWithValues: zip(tensors.map(\.name), counts))
    }
}

/// The fraction of a layer's active weights replaced at an update.
public struct UpdateSchedule: Sendable, Equatable, Codable {
    public enum Decay: String, Sendable, Codable, CaseIterable {
        /// The paper: ζ/2·(1 + cos(π t / T_end)) until T_end, no updates after.
        case paper
        /// The official code: cosine over the whole run, floored at 0.005.
        case official
    }

    /// ΔT: steps between updates.
    public var interval: Int
    /// T_end as a fraction of the run's steps.
    public var endFraction: Double = 0.8
    /// ζ: the fraction at t = 0.
    public var initialFraction: Double = 0.5
    public var decay: Decay = .paper

    public init(interval: Int, endFraction: Double = 0.8, initialFraction: Double = 0.5, decay: Decay = .paper) {
        self.interval = interval; self.endFraction = endFraction; self.initialFraction = initialFraction; self.decay = decay
    }

    /// The fraction to prune and regrow at step `t` of `total`, or nil when `t` is not an
    /// update step.
    public func fraction(step t: Int, total: Int) -> Double? {
        guard t > 0, interval > 0, t % interval == 0 else { return nil }
        switch decay {
        case .paper:
            let end = endFraction * Double(total)
            guard Double(t) < end else { return nil }
            return initialFraction / 2 * (1 + cos(Double.pi * Double(t) / end))
        case .official:
            guard t < total else { return nil }
            return max(0.005, initialFraction / 2 * (1 + cos(Double.pi * Double(t) / Double(total))))
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
