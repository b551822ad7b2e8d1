import Core
import Kernels
import Model

/// Which weights are active, over the parameter layout: a float buffer of the same layout
/// holding 1 (active) or 0 (inactive), so applying a mask is one multiply per value.
/// Tensors that are not prunable are all ones. The coordinator owns the mask and bumps
/// `version` at every topology change; frames carry the version they were made under.
public final class MaskSet: @unchecked Sendable {
    public let layout: ParameterLayout
    /// The prunable tensors, in layout order.
    public let prunable: [TensorSpec]
    public let mask: FloatBuffer
    /// 1 where a weight has been active at any time since the start (exploration rate).
    public let everActive: FloatBuffer
    public private(set) var version: Int = 0
    /// Changes made to this object's mask, counted from 0 and never restored (a version
    /// can be set back by a checkpoint): what anything built from the mask is keyed by.
    public private(set) var edits: Int = 0
    /// The mask switches whole heads and neurons (S2ViTE, SSP; see `UnitSelection`).
    public let isStructured: Bool

    /// Which tensors are prunable: every block's qkv, proj, fc1 and fc2 weights, and
    /// optionally the patch embedding and the head (as the official code does).
    public static func prunableTensors(_ layout: ParameterLayout, includeEmbeddingAndHead: Bool = false) -> [TensorSpec] {
        layout.tensors.filter { t in
            if t.name.hasPrefix("blocks.") {
                return [".attn.qkv.weight", ".attn.proj.weight", ".mlp.fc1.weight", ".mlp.fc2.weight"].contains { t.name.hasSuffix($0) }
            }
            return includeEmbeddingAndHead && (t.name == "patch_embed.proj.weight" || t.name == "head.weight")
        }
    }

    /// All ones (dense) over the given prunable tensors.
    public init(layout: ParameterLayout, prunable: [TensorSpec], structured: Bool = false) {
        self.layout = layout
        self.prunable = prunable
        isStructured = structured
        mask = FloatBuffer(count: layout.count)
        everActive = FloatBuffer(count: layout.count)
        for t in layout.tensors {
            let m = mask.view(t)
            for i in m.indices { m[i] = 1 }
        }
        for t in prunable {
            let e = everActive.view(t)
            for i in e.indices { e[i] = 1 }
        }
    }

    /// Sets each prunable tensor to exactly `counts[name]` active weights chosen uniformly
    /// at random (the paper's random initial topology).
    public func randomize(counts: [String: Int], seed: UInt64) {
        var rng = Xoshiro256(seed: seed)
        for t in prunable {
            let k = counts[t.name] ?? t.count
            precondition(k >= 0 && k <= t.count, "MaskSet: \(k) active of \(t.count) in \(t.name)")
            // Partial Fisher–Yates: the first k of a random permutation are active.
            var order = Array(0 ..< t.count)
            for i in 0 ..< k {
                let j = i + Int(rng.next() % UInt64(t.count - i))
                order.swapAt(i, j)
            }
            let m = mask.view(t), e = everActive.view(t)
            for i in m.indices { m[i] = 0; e[i] = 0 }
            for i in order[0 ..< k] { m[i] = 1; e[i] = 1 }
        }
        version += 1
        edits += 1
    }

    /// Sets the ever-active map to the current mask (a run's starting topology).
    public func resetExploration() {
        for t in prunable { (everActive.pointer + t.offset).update(from: mask.pointer + t.offset, count: t.count) }
    }

    /// Marks a topology change (after prune-and-grow has edited `mask`).
    public func bumpVersion() { version += 1; edits += 1 }

    /// After a checkpoint has written `mask` and `everActive` back.
    public func restoreVersion(_ v: Int) { version = v; edits += 1 }

    /// Zeroes the inactive values of a buffer in the same layout (weights, gradients,
    /// optimizer moments).
    public func apply(to buffer: FloatBuffer) {
        precondition(buffer.count == layout.count)
        for t in prunable {
            let b = buffer.pointer + t.offset, m = mask.pointer + t.offset
            for i in 0 ..< t.count { b[i] *= m[i] }
        }
    }

    /// Per prunable tensor, the active weights of `params` (same layout) that are exactly
    /// zero. A grown weight starts at zero and only its first update moves it, so these are
    /// grown weights that no update has reached yet: under top-k, ones that have not yet
    /// been among a worker's largest (docs/benchmarks.md measured up to a third of the
    /// active weights in the estimate mode).
    public func untrainedCounts(_ params: UnsafePointer<Float>) -> [Int] {
        prunable.map { t in
            let p = params + t.offset, m = mask.pointer + t.offset
            var n = 0
            for i in 0 ..< t.count where m[i] != 0 && p[i] == 0 { n += 1 }
            return n
        }
    }

    /// Active entries of a tensor, counted 8 lanes at a time (both sides count every step
    /// to size the packed values; the scalar count took 4% of a training step).
    public func activeCount(_ t: TensorSpec) -> Int {
        let m = UnsafeRawPointer(mask.pointer + t.offset)
        var lanes = SIMD8<Int32>()
        var i = 0
        let one = SIMD8<Int32>(repeating: 1), zero = SIMD8<Int32>()
        while i + 8 <= t.count {
            let v = m.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            lanes &+= zero.replacing(with: one, where: v .!= 0)
            i += 8
        }
        var n = Int(lanes.wrappedSum())
        let p = mask.pointer + t.offset
        while i < t.count { if p[i] != 0 { n += 1 }; i += 1 }
        return n
    }

    public func isActive(_ t: TensorSpec, _ i: Int) -> Bool { mask.pointer[t.offset + i] != 0 }

    /// Active weights over all prunable tensors.
    public var activePrunable: Int { prunable.reduce(0) { $0 + activeCount($1) } }
    public var totalPrunable: Int { prunable.reduce(0) { $0 + $1.count } }
    public var density: Double { Double(activePrunable) / Double(max(totalPrunable, 1)) }

    /// Fraction of prunable weights that have ever been active (the exploration rate).
    public var explorationRate: Double {
        var n = 0
        for t in prunable {
            let e = everActive.pointer + t.offset
            for i in 0 ..< t.count where e[i] != 0 { n += 1 }
        }
        return Double(n) / Double(max(totalPrunable, 1))
    }

    /// Records newly active weights in `everActive`.
    func noteActive(_ t: TensorSpec, _ i: Int) { everActive.pointer[t.offset + i] = 1 }
}

// MARK: - what travels: active values only, masks as bitmaps or change lists

extension MaskSet {
    /// Values a packed buffer holds: every value of the tensors that are not prunable and
    /// the active values of the prunable ones.
    public var packedCount: Int { layout.parameterCount - totalPrunable + activePrunable }

    /// Copies the values both sides need, in layout order, into `out` (packedCount floats).
    public func pack(_ source: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        let prunableOffsets = Set(prunable.map(\.offset))
        var k = 0
        for t in layout.tensors {
            let src = source + t.offset
            if prunableOffsets.contains(t.offset), t.count > 0 {
                // Branch-free: every value is written at the next slot and the slot advances
                // only for active ones (a random mask mispredicts half the branches otherwise).
                // The last one is done with a branch, so nothing is written past the end.
                let m = mask.pointer + t.offset
                for i in 0 ..< t.count - 1 { out[k] = src[i]; k &+= m[i] != 0 ? 1 : 0 }
                if m[t.count - 1] != 0 { out[k] = src[t.count - 1]; k += 1 }
            } else {
                (out + k).update(from: src, count: t.count)
                k += t.count
            }
        }
    }

    /// The inverse of `pack`: writes a full buffer, zero where the mask is off.
    public func unpack(_ packed: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        let prunableOffsets = Set(prunable.map(\.offset))
        // Inactive entries read the next packed value and drop it; clamped so the read
        // never passes the last one.
        let last = max(packedCount - 1, 0)
        var k = 0
        for t in layout.tensors {
            let dst = out + t.offset
            if prunableOffsets.contains(t.offset), t.count > 0 {
                // Branch-free as in pack.
                let m = mask.pointer + t.offset
                for i in 0 ..< t.count - 1 {
                    let active = m[i] != 0
                    let v = packed[min(k, last)]
                    dst[i] = active ? v : 0
                    k &+= active ? 1 : 0
                }
                if m[t.count - 1] != 0 { dst[t.count - 1] = packed[k]; k += 1 } else { dst[t.count - 1] = 0 }
            } else {
                dst.update(from: packed + k, count: t.count)
                k += t.count
            }
        }
    }

    /// The prunable tensors' mask as bits (layer after layer, LSB first).
    public var bitmap: [UInt8] {
        var out = [UInt8](repeating: 0, count: (totalPrunable + 7) / 8)
        var bit = 0
        for t in prunable {
            let m = mask.pointer + t.offset
            for i in 0 ..< t.count {
                if m[i] != 0 { out[bit >> 3] |= 1 << UInt8(bit & 7) }
                bit += 1
            }
        }
        return out
    }

    /// Sets the mask from a bitmap; false if its size does not fit.
    public func setBitmap(_ bits: some Collection<UInt8>, version v: Int) -> Bool {
        guard bits.count == (totalPrunable + 7) / 8 else { return false }
        let b = Array(bits)
        var bit = 0
        for t in prunable {
            let m = mask.pointer + t.offset
            for i in 0 ..< t.count {
                m[i] = b[bit >> 3] & (1 << UInt8(bit & 7)) != 0 ? 1 : 0
                bit += 1
            }
        }
        version = v
        edits += 1
        return true
    }

    /// Applies a topology change (per prunable layer: indices switched off, then on).
    /// False, with nothing changed, if an index is out of range or the change does not
    /// fit the current mask.
    public func apply(change: [(off: [UInt32], on: [UInt32])], version v: Int) -> Bool {
        guard change.count == prunable.count else { return false }
        for (t, c) in zip(prunable, change) {
            let m = mask.pointer + t.offset
            for i in c.off { guard Int(i) < t.count, m[Int(i)] != 0 else { return false } }
            for i in c.on { guard Int(i) < t.count, m[Int(i)] == 0 || c.off.contains(i) else { return false } }
        }
        for (t, c) in zip(prunable, change) {
            let m = mask.pointer + t.offset
            for i in c.off { m[Int(i)] = 0 }
            for i in c.on { m[Int(i)] = 1; noteActive(t, Int(i)) }
        }
        version = v
        edits += 1
        return true
    }
}
