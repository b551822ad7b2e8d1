import Core
import Model

/// SViTE's unstructured topology update, layer by layer: drop the ⌈f·active⌉ active
/// weights of smallest magnitude, grow as many of the weights that were inactive before
/// the update with the largest dense-gradient magnitude (RigL also lets a just-dropped
/// weight regrow; excluding them lets workers send candidates without knowing the drop). Every layer keeps its active count; grown weights start at
/// zero with zero optimizer moments (as RigL).
public enum PruneAndGrow {
    public struct LayerChange: Sendable, Equatable {
        public var name: String
        public var pruned: [Int]
        public var grown: [Int]
    }

    /// How many weights a layer swaps: ⌈f·active⌉, but no more than there are inactive
    /// candidates, so every layer keeps its active count (a dense-ish ERK layer can have
    /// fewer inactive weights than f·active).
    public static func exchangeCount(active: Int, inactive: Int, fraction: Double) -> Int {
        UnitExchange.ceil.count(kept: active, inactive: inactive, fraction: fraction)
    }

    /// Chooses and applies one update. `gradient` holds dense-gradient magnitudes (or
    /// any grow score) for the layer's weights; `moments` are zeroed where weights grow.
    @discardableResult
    public static func update(masks: MaskSet, params: FloatBuffer, growScore: (TensorSpec) -> UnsafePointer<Float>,
                              fraction: Double, moments: [FloatBuffer]) -> [LayerChange] {
        var changes: [LayerChange] = []
        for t in masks.prunable {
            let m = masks.mask.pointer + t.offset, w = params.pointer + t.offset
            let active = (0 ..< t.count).filter { m[$0] != 0 }
            // Candidates to grow are the weights inactive before this update: the ones
            // workers can report without knowing what the coordinator will drop.
            let inactive = (0 ..< t.count).filter { m[$0] == 0 }
            let k = exchangeCount(active: active.count, inactive: inactive.count, fraction: fraction)
            guard k > 0 else { changes.append(LayerChange(name: t.name, pruned: [], grown: [])); continue }
            // Smallest |w| among active; ties broken by index, so the choice is reproducible.
            let pruned = Array(active.sorted { a, b in
                let x = abs(w[a]), y = abs(w[b])
                return x != y ? x < y : a < b
            }.prefix(k))
            for i in pruned { m[i] = 0 }
            let g = growScore(t)
            let grown = Array(inactive.sorted { a, b in
                let x = abs(g[a]), y = abs(g[b])
                return x != y ? x > y : a < b
            }.prefix(k))
            for i in grown {
                m[i] = 1
                masks.noteActive(t, i)
            }
            for i in pruned + grown {
                w[i] = 0
                for b in moments { b.pointer[t.offset + i] = 0 }
            }
            changes.append(LayerChange(name: t.name, pruned: pruned.sorted(), grown: grown.sorted()))
        }
        masks.bumpVersion()
        return changes
    }
}
