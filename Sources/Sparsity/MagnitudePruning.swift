import Core
import Model

/// The baselines' pruning: keep the weights with the highest score (|w| for magnitude
/// pruning, |w·g| for Taylor pruning) and switch the rest off for good. Pruned weights and
/// their moments are zeroed; nothing grows.
public enum MagnitudePruning {
    /// Keeps the `keep` highest-scoring active weights over all prunable layers together
    /// (global pruning, as OMP and TP do).
    @discardableResult
    public static func pruneGlobal(masks: MaskSet, params: FloatBuffer, score: (TensorSpec) -> UnsafePointer<Float>,
                                   keep: Int, moments: [FloatBuffer]) -> [PruneAndGrow.LayerChange] {
        var entries: [(s: Float, layer: Int, i: Int)] = []
        for (l, t) in masks.prunable.enumerated() {
            let m = masks.mask.pointer + t.offset, sc = score(t)
            for i in 0 ..< t.count where m[i] != 0 { entries.append((abs(sc[i]), l, i)) }
        }
        guard keep < entries.count else { return masks.prunable.map { .init(name: $0.name, pruned: [], grown: []) } }
        // Lowest scores go; ties by layer and index, so the choice is reproducible.
        entries.sort { a, b in a.s != b.s ? a.s < b.s : (a.layer != b.layer ? a.layer < b.layer : a.i < b.i) }
        var pruned = [[Int]](repeating: [], count: masks.prunable.count)
        for e in entries.prefix(entries.count - max(0, keep)) { pruned[e.layer].append(e.i) }
        return apply(pruned, masks: masks, params: params, moments: moments)
    }

    /// Keeps `counts[name]` highest-scoring active weights in each layer (GMP).
    @discardableResult
    public static func pruneLayers(masks: MaskSet, params: FloatBuffer, score: (TensorSpec) -> UnsafePointer<Float>,
                                   counts: [String: Int], moments: [FloatBuffer]) -> [PruneAndGrow.LayerChange] {
        let pruned: [[Int]] = masks.prunable.map { t in
            let m = masks.mask.pointer + t.offset, sc = score(t)
            let active = (0 ..< t.count).filter { m[$0] != 0 }
            let keep = min(counts[t.name] ?? active.count, active.count)
            return Array(active.sorted { a, b in
                let x = abs(sc[a]), y = abs(sc[b])
                return x != y ? x < y : a < b
            }.prefix(active.count - keep))
        }
        return apply(pruned, masks: masks, params: params, moments: moments)
    }

    static func apply(_ pruned: [[Int]], masks: MaskSet, params: FloatBuffer, moments: [FloatBuffer]) -> [PruneAndGrow.LayerChange] {
        for (t, p) in zip(masks.prunable, pruned) {
            for i in p {
                masks.mask.pointer[t.offset + i] = 0
                params.pointer[t.offset + i] = 0
                for b in moments { b.pointer[t.offset + i] = 0 }
            }
        }
        masks.bumpVersion()
        return zip(masks.prunable, pruned).map { .init(name: $0.name, pruned: $1.sorted(), grown: []) }
    }
}

/// When the baselines prune and to what density.
public struct PruningPlan: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// Once, at `at` (fraction of the run), to the target: OMP (by |w|) and TP (by |w·g|).
        case oneShot(at: Double, taylor: Bool)
        /// Zhu & Gupta's cubic schedule: `events` prunes evenly from `start` to `end`
        /// (fractions of the run), density 1 − s·(1 − (1 − k/events)³) after event k.
        case gradual(start: Double, end: Double, events: Int)
    }

    public var kind: Kind
    public var targetDensity: Double

    /// The density to prune to at 1-based step `t` of `total`, or nil.
    public func density(step t: Int, total: Int) -> Double? {
        switch kind {
        case let .oneShot(at, _):
            return t == max(1, Int((at * Double(total)).rounded())) ? targetDensity : nil
        case let .gradual(start, end, events):
            let s0 = start * Double(total), span = (end - start) * Double(total)
            // The largest k that falls on this step, so crowded events still end at the target.
            for k in (1 ... max(events, 1)).reversed() where t == Int((s0 + span * Double(k) / Double(events)).rounded()) {
                let frac = 1 - Double(k) / Double(events)
                return 1 - (1 - targetDensity) * (1 - frac * frac * frac)
            }
            return nil
        }
    }
}
