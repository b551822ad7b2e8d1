import Model

/// SViTE's unstructured topology update, layer by layer: drop the ⌈f·active⌉ active
/// weights of smallest magnitude, grow as many inactive weights with the largest
/// dense-gradient magnitude. Every layer keeps its active count; grown weights start at
/// zero with zero optimizer moments (as RigL).
public enum PruneAndGrow {
    public struct LayerChange: Sendable, Equatable {
        public var name: String
        public var pruned: [Int]
        public var grown: [Int]
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
            let k = min(Int((fraction * Double(active.count)).rounded(.up)), active.count)
            guard k > 0 else { changes.append(LayerChange(name: t.name, pruned: [], grown: [])); continue }
            // Smallest |w| among active; ties broken by index, so the choice is reproducible.
            let pruned = Array(active.sorted { a, b in
                let x = abs(w[a]), y = abs(w[b])
                return x != y ? x < y : a < b
            }.prefix(k))
            for i in pruned { m[i] = 0 }
            // Largest |g| among the now inactive (a weight just dropped may come back, as in RigL).
            let g = growScore(t)
            let inactive = (0 ..< t.count).filter { m[$0] == 0 }
            let grown = Array(inactive.sorted { a, b in
                let x = abs(g[a]), y = abs(g[b])
                return x != y ? x > y : a < b
            }.prefix(k))
            for i in grown {
                m[i] = 1
                masks.noteActive(t, i)
            }
            for i in pruned where m[i] == 0 { w[i] = 0 }
            for i in grown {
                w[i] = 0
                for b in moments { b.pointer[t.offset + i] = 0 }
            }
            for i in pruned where m[i] == 0 { for b in moments { b.pointer[t.offset + i] = 0 } }
            changes.append(LayerChange(name: t.name, pruned: pruned.sorted(), grown: grown.sorted()))
        }
        masks.bumpVersion()
        return changes
    }
}
