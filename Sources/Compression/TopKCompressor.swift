import Core
import Model
import Sparsity

/// What a run's workers select and how they code it: fixed for the run (its
/// `communication:` section). What changes step by step (the density, the replica's
/// variance and each tensor's factor on it) goes with each call instead.
public struct TopKSettings: Sendable, Equatable {
    /// How the values travel (the rounding of bf16 or int8 stays in the residual).
    public var codec: ValueCodec
    /// Tensors of one dimension (biases, LayerNorm) count as small, as DGC's reference code
    /// has it (it compresses only `param.dim() > 1`): they are a percent of the weights and,
    /// at one entry in a hundred, would wait a hundred steps per value.
    public var denseVectors: Bool
    /// Tensors of at most this many weights count as small too (0: none).
    public var denseBelow: Int
    /// What each small tensor sends: 1, all of it; below 1, the top ⌈d · active⌉ of its
    /// entries with the same error feedback, d never below the step's density (`smallK`):
    /// its values wait a few steps rather than a hundred, and the bytes they no longer take
    /// buy a higher density for the big matrices.
    public var smallDensity: Double
    /// The k of all top-k tensors together (Σ k per tensor) go to the largest ranks of the
    /// model, wherever they are, instead of k to each tensor.
    public var acrossTensors: Bool
    /// AdamW's ε in the ranks |acc| / (√v + ε) of `rank_by: update`.
    public var eps: Float

    public init(codec: ValueCodec = .fp32, denseVectors: Bool = false, denseBelow: Int = 0, smallDensity: Double = 1,
                acrossTensors: Bool = false, eps: Float = 1e-8) {
        self.codec = codec; self.denseVectors = denseVectors; self.denseBelow = denseBelow
        self.smallDensity = smallDensity; self.acrossTensors = acrossTensors; self.eps = eps
    }

    /// Whether a tensor is small, so it sends `smallK` entries (whole by default) rather than
    /// top-k: a vector (with `denseVectors`) or at most `denseBelow` weights, by size, not by
    /// active count (a pruned matrix is not a small tensor).
    public func isSmall(_ t: TensorSpec) -> Bool { (denseVectors && t.shape.count <= 1) || t.count <= denseBelow }
}

/// A worker's top-k uplink with error feedback (EF-SGD, Deep Gradient Compression): the
/// fresh gradient is added to what earlier steps did not send, the k largest magnitudes of
/// each tensor are sent, and everything else stays in the residual for later steps, so
/// nothing is lost, only delayed: over any run of steps, the sent values plus the residual
/// sum to the gradients (`sentPlusResidualIsTheGradientSum` checks it per weight).
///
/// k = ⌈density · active⌉ per tensor (at least one for a tensor with an active weight).
/// The residual follows the masks: an inactive weight holds none (a pruned weight's
/// residual is dropped with it, a grown one starts at zero). It lives in this worker
/// only: a worker that leaves loses its own unsent residual, at most one step's worth of
/// gradient per entry it never got to send, and nothing the others sent.
public final class TopKCompressor {
    public let layout: ParameterLayout
    /// The run's choices (`GradientEncoder` sets them; direct calls pass their own).
    public var settings = TopKSettings()
    /// Unsent gradient, full layout.
    public let residual: FloatBuffer
    /// One tensor's active positions, their ranks and a copy to select in (grown to the
    /// largest tensor on first use).
    let scratch = SelectionScratch()
    /// 1 / (√v + ε) when ranking by the update (scratch, allocated on first use).
    var rankScale = FloatBuffer(count: 0)

    public init(layout: ParameterLayout) {
        self.layout = layout
        residual = FloatBuffer(count: layout.count)
    }

    /// k for a tensor with `active` active weights.
    public static func k(density: Double, active: Int) -> Int {
        guard active > 0 else { return 0 }
        return min(active, max(1, Int((density * Double(active)).rounded(.up))))
    }

    /// Adds `gradient` (full layout) to the residual, takes the top k of each tensor by
    /// magnitude among the active weights, and leaves in the residual what was not sent
    /// (and, with bf16 or int8 values, the rounding of what was). NaN counts as the largest
    /// magnitude, so a broken gradient is sent (and refused), not hidden in the residual.
    /// `settings`: the run's codec, its small tensors and where k is chosen.
    /// `variance`: rank by the AdamW step each entry would make, |acc| / (√v + ε), instead
    /// of |acc| (full layout); the values sent and kept are gradients either way.
    /// `tensorScale`: with `variance`, each tensor's factor on √v (the tracked frozen
    /// variance's, `VarianceTracker.scales`), so ranks compare across tensors.
    public func compress(_ gradient: UnsafePointer<Float>, mask: MaskSet?, density: Double, settings: TopKSettings = TopKSettings(),
                         variance: UnsafePointer<Float>? = nil, tensorScale: [Float]? = nil) -> SparseGradient {
        select(adding: gradient, mask: mask, density: density, settings: settings, variance: variance, tensorScale: tensorScale)
    }

    /// `compress`, with `gradient` nil when the residual already holds the values to select
    /// from (the estimate writes its M − G there); inactive weights are zeroed either way.
    func select(adding gradient: UnsafePointer<Float>?, mask: MaskSet?, density: Double, settings: TopKSettings,
                variance: UnsafePointer<Float>?, tensorScale: [Float]?) -> SparseGradient {
        let acc = residual.pointer
        let m = mask?.mask.pointer
        if let variance { fillRankScale(variance, eps: settings.eps, tensorScale: tensorScale) }
        let scale: UnsafePointer<Float>? = variance == nil ? nil : UnsafePointer(rankScale.pointer)
        if settings.acrossTensors {
            return compressAcrossTensors(gradient, mask: mask, density: density, settings: settings, scale: scale)
        }
        let (positions, ranks, selection) = scratch.pointers(for: max(layout.tensors.map(\.count).max() ?? 0, Self.sampleSize))
        var indices: [[UInt32]] = [], values: [[Float]] = []
        indices.reserveCapacity(layout.tensors.count); values.reserveCapacity(layout.tensors.count)
        for t in layout.tensors {
            let a = acc + t.offset
            let st = scale.map { $0 + t.offset }
            let mt = m.map { $0 + t.offset }
            // acc = residual + gradient on the active weights; inactive ones hold nothing.
            Self.accumulate(a, gradient.map { $0 + t.offset }, mask: mt, count: t.count)
            let active = mask.map { $0.activeCount(t) } ?? t.count
            let k = settings.isSmall(t) ? Self.smallK(density: density, smallDensity: settings.smallDensity, active: active)
                : Self.k(density: density, active: active)
            let idx = topK(a, scale: st, mask: mt, count: t.count, active: active, k: k, positions: positions, ranks: ranks, selection: selection)
            indices.append(idx); values.append(Self.send(idx, from: a, codec: settings.codec))
        }
        return SparseGradient(indices: indices, values: values)
    }

    /// k for a small tensor (`isSmall`): every active entry at a small density of 1,
    /// else ⌈d · active⌉ with d = max(smallDensity, density).
    public static func smallK(density: Double, smallDensity: Double, active: Int) -> Int {
        smallDensity >= 1 ? active : k(density: max(smallDensity, density), active: active)
    }

    /// The positions of the k largest ranks among one tensor's active entries `a` (its
    /// residual plus gradient; `scale`, `mask` at its offset), in increasing order, exactly:
    /// ties at the k-th rank go by position. `positions`, `ranks`, `selection`: scratch of
    /// at least `count` (and `sampleSize`) entries.
    func topK(_ a: UnsafePointer<Float>, scale st: UnsafePointer<Float>?, mask mt: UnsafePointer<Float>?, count: Int, active: Int, k: Int,
              positions: UnsafeMutablePointer<UInt32>, ranks: UnsafeMutablePointer<Float>, selection: UnsafeMutablePointer<Float>) -> [UInt32] {
        @inline(__always) func rank(_ i: Int) -> Float { st.map { Self.magnitude(a[i]) * $0[i] } ?? Self.magnitude(a[i]) }
        // The candidates: active entries ranked at least `low`, in position order. A big
        // tensor first estimates from a strided sample a `low` that about 2k entries
        // reach (DGC's sampled threshold), so only those are gathered and selected; if
        // fewer than k reach it, everything is gathered again. Either way the result is
        // the exact top k: every entry above the k-th largest is a candidate.
        var low: Float = k < active && count >= Self.sampledFrom ? sampledLowerBound(rank, count: count, k: k, into: selection) : 0
        var candidates = 0
        while true {
            candidates = 0
            if low > 0 {
                // Inactive weights hold 0, below any positive bound: no mask needed.
                candidates = Self.gather(a, scale: st, count: count, atLeast: low, positions: positions, ranks: ranks)
            } else {
                candidates = Self.gatherActive(a, scale: st, mask: mt, count: count, positions: positions, ranks: ranks)
            }
            if candidates >= k || low == 0 { break }
            low = 0
        }
        let (threshold, atThreshold) = Self.threshold(ranks, count: candidates, k: k, selection: selection)
        var ties = atThreshold
        return Self.pick(positions, ranks, 0 ..< candidates, threshold: threshold, ties: &ties, expected: k)
    }

    /// Every active entry with its rank, in position order; returns how many.
    static func gatherActive(_ a: UnsafePointer<Float>, scale: UnsafePointer<Float>?, mask: UnsafePointer<Float>?, count: Int,
                             positions: UnsafeMutablePointer<UInt32>, ranks: UnsafeMutablePointer<Float>) -> Int {
        var n = 0
        for i in 0 ..< count {
            if let mask, mask[i] == 0 { continue }
            positions[n] = UInt32(i); ranks[n] = scale.map { magnitude(a[i]) * $0[i] } ?? magnitude(a[i]); n += 1
        }
        return n
    }

    /// The k-th largest of `count` candidate ranks and how many entries at it are taken
    /// (−∞ and 0 when every candidate goes). A copy is selected, so `ranks` stays in
    /// position order; after it the k−1 entries past the k-th largest are all ≥ it, so
    /// the count strictly above it needs no pass over the candidates.
    static func threshold(_ ranks: UnsafePointer<Float>, count: Int, k: Int, selection: UnsafeMutablePointer<Float>) -> (Float, Int) {
        guard k < count else { return (-.infinity, 0) }
        selection.update(from: ranks, count: count)
        let threshold = kthLargest(UnsafeMutableBufferPointer(start: selection, count: count), k)
        var ties = k
        for j in count - k + 1 ..< count where selection[j] > threshold { ties -= 1 }
        return (threshold, ties)
    }

    /// The candidates in `range` ranked strictly above `threshold`, and the first `ties`
    /// at it, in order.
    static func pick(_ positions: UnsafePointer<UInt32>, _ ranks: UnsafePointer<Float>, _ range: Range<Int>, threshold: Float,
                     ties: inout Int, expected: Int = 0) -> [UInt32] {
        var idx: [UInt32] = []
        idx.reserveCapacity(expected)
        for j in range {
            let r = ranks[j]
            guard r > threshold || (r == threshold && ties > 0) else { continue }
            if r == threshold { ties -= 1 }
            idx.append(positions[j])
        }
        return idx
    }

    /// The values at `idx` as the coordinator will decode them (`codec` rounds them); each
    /// leaves `a` and only its rounding stays.
    static func send(_ idx: [UInt32], from a: UnsafeMutablePointer<Float>, codec: ValueCodec) -> [Float] {
        [Float](unsafeUninitializedCapacity: idx.count) { vb, count in
            for (j, p) in idx.enumerated() { vb[j] = a[Int(p)] }
            if let b = vb.baseAddress { codec.roundTrip(b, count: idx.count) }
            for (j, p) in idx.enumerated() {
                let i = Int(p), sent = vb[j]
                // A non-finite entry (or an int8 list poisoned by one) is refused by the
                // coordinator; it must not stay in the residual as NaN.
                a[i] = sent.isFinite ? a[i] - sent : 0
            }
            count = idx.count
        }
    }

    /// a = mask ≠ 0 ? a + g : 0 (no mask: a + g), sixteen lanes at a time; without `g`,
    /// only the inactive entries are zeroed.
    static func accumulate(_ a: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>?, mask: UnsafePointer<Float>?, count: Int) {
        typealias V = SIMD16<Float>
        var i = 0
        switch (g, mask) {
        case let (g?, mask?):
            while i + 16 <= count {
                let sum = a.simd(V.self, at: i) + g.simd(V.self, at: i)
                a.store(sum.replacing(with: 0, where: mask.simd(V.self, at: i) .== 0), at: i)
                i += 16
            }
            while i < count { a[i] = mask[i] != 0 ? a[i] + g[i] : 0; i += 1 }
        case let (g?, nil):
            while i + 16 <= count {
                a.store(a.simd(V.self, at: i) + g.simd(V.self, at: i), at: i)
                i += 16
            }
            while i < count { a[i] += g[i]; i += 1 }
        case let (nil, mask?):
            while i + 16 <= count {
                a.store(a.simd(V.self, at: i).replacing(with: 0, where: mask.simd(V.self, at: i) .== 0), at: i)
                i += 16
            }
            while i < count { if mask[i] == 0 { a[i] = 0 }; i += 1 }
        case (nil, nil):
            break
        }
    }

    /// The entries whose rank (|a|, times `scale` where given; NaN ranks ∞) is at least
    /// `low` > 0, with their ranks, in position order; returns how many. Sixteen lanes
    /// are compared at a time and only lanes that pass are looked at one by one.
    static func gather(_ a: UnsafePointer<Float>, scale: UnsafePointer<Float>?, count: Int, atLeast low: Float,
                       positions: UnsafeMutablePointer<UInt32>, ranks: UnsafeMutablePointer<Float>) -> Int {
        typealias V = SIMD16<Float>
        // Non-negative floats order as their bit patterns, and a NaN's (sign cleared) lies
        // above ∞'s: one integer max per sixteen lanes says whether any lane passes.
        let bound = low.bitPattern
        var n = 0, i = 0
        @inline(__always) func take(_ j: Int) {
            let r = scale.map { magnitude(a[j]) * $0[j] } ?? magnitude(a[j])
            if r >= low { positions[n] = UInt32(j); ranks[n] = r; n += 1 }
        }
        while i + 16 <= count {
            var bits = unsafeBitCast(a.simd(V.self, at: i), to: SIMD16<UInt32>.self) & 0x7FFF_FFFF  // |a|
            if let scale {
                let r = unsafeBitCast(bits, to: V.self) * scale.simd(V.self, at: i)
                bits = unsafeBitCast(r, to: SIMD16<UInt32>.self) & 0x7FFF_FFFF
            }
            if bits.max() >= bound { for j in i ..< i + 16 { take(j) } }
            i += 16
        }
        while i < count { take(i); i += 1 }
        return n
    }

    /// Tensors of at least this many weights select among sampled candidates.
    static let sampledFrom = 4096
    /// Ranks sampled per tensor for the candidates' lower bound.
    static let sampleSize = 1024

    /// A rank that about 2k + 4·count/sampleSize entries of the tensor reach: the matching
    /// order statistic of `sampleSize` ranks at even strides (inactive weights rank 0, as
    /// k counts them among all `count`). `scratch`: at least `sampleSize` floats.
    func sampledLowerBound(_ rank: (Int) -> Float, count: Int, k: Int, into scratch: UnsafeMutablePointer<Float>) -> Float {
        let n = Self.sampleSize
        for j in 0 ..< n { scratch[j] = rank(j * count / n) }
        let expected = Double(n) * Double(k) / Double(count)
        let order = min(n, Int(2 * expected) + 4)
        return Self.kthLargest(UnsafeMutableBufferPointer(start: scratch, count: n), order)
    }

    /// 1 / (√v · f + ε) per weight, f the tensor's factor (1 without `tensorScale`), for
    /// `compress(variance:)` (scratch, full layout).
    func fillRankScale(_ v: UnsafePointer<Float>, eps: Float, tensorScale: [Float]? = nil) {
        if rankScale.count != layout.count { rankScale = FloatBuffer(count: layout.count) }
        let s = rankScale.pointer
        let factors = tensorScale?.count == layout.tensors.count ? tensorScale : nil
        for (ti, t) in layout.tensors.enumerated() {
            let f = factors?[ti] ?? 1
            // A NaN or negative variance ranks as zero variance; the scale stays positive, so
            // a NaN gradient (rank ∞) is still the first sent.
            for i in t.offset ..< t.offset + t.count {
                s[i] = Swift.max(1 / ((v[i] > 0 ? v[i] : 0).squareRoot() * f + eps), .leastNormalMagnitude)
            }
        }
    }

    /// `compress` with one k for the whole model: K = Σ k of the tensors that are not sent
    /// whole, given to the K largest ranks among all of them (ties in tensor, then position
    /// order). The ranks must be comparable across tensors, as the AdamW steps of
    /// `rank_by: update` with each tensor's variance factor are: then the K entries sent
    /// are those whose absence would move the weights furthest from the step AdamW would
    /// take, and a tensor whose entries all sit close to it sends fewer than its share.
    /// Small tensors keep their own k (`smallK`), chosen within each of them first.
    func compressAcrossTensors(_ gradient: UnsafePointer<Float>?, mask: MaskSet?, density: Double, settings: TopKSettings,
                               scale: UnsafePointer<Float>?) -> SparseGradient {
        let acc = residual.pointer
        let m = mask?.mask.pointer
        let tensors = layout.tensors
        var small = [Bool](repeating: false, count: tensors.count)
        var smallPicks = [[UInt32]](repeating: [], count: tensors.count)
        var total = 0, budget = 0, rankedCount = 0, largestSmall = 0
        for (ti, t) in tensors.enumerated() {
            Self.accumulate(acc + t.offset, gradient.map { $0 + t.offset }, mask: m.map { $0 + t.offset }, count: t.count)
            let active = mask.map { $0.activeCount(t) } ?? t.count
            small[ti] = settings.isSmall(t)
            if small[ti] { largestSmall = max(largestSmall, t.count) }
            else { budget += Self.k(density: density, active: active); rankedCount += t.count; total += active }
        }
        @inline(__always) func rank(_ i: Int) -> Float { scale.map { Self.magnitude(acc[i]) * $0[i] } ?? Self.magnitude(acc[i]) }
        let (positions, ranks, selection) = scratch.pointers(for: max(rankedCount, largestSmall, 4 * Self.sampleSize))
        // The small tensors' own k (all of them when whole), before the scratch holds the
        // model's candidates.
        for (ti, t) in tensors.enumerated() where small[ti] {
            let active = mask.map { $0.activeCount(t) } ?? t.count
            smallPicks[ti] = topK(acc + t.offset, scale: scale.map { $0 + t.offset }, mask: m.map { $0 + t.offset }, count: t.count,
                                  active: active, k: Self.smallK(density: density, smallDensity: settings.smallDensity, active: active),
                                  positions: positions, ranks: ranks, selection: selection)
        }
        // Candidates as in `compress`: a lower bound that about 2K entries reach, from a
        // strided sample of every ranked tensor in proportion to its size; all actives when
        // fewer than K reach it. `starts[ti]` ..< `starts[ti + 1]`: tensor ti's candidates.
        var low: Float = 0
        if budget < total && rankedCount >= Self.sampledFrom {
            let n = 4 * Self.sampleSize
            var taken = 0
            for (ti, t) in tensors.enumerated() where !small[ti] {
                let share = max(1, n * t.count / rankedCount)
                for j in 0 ..< share where taken < n { selection[taken] = rank(t.offset + j * t.count / share); taken += 1 }
            }
            let expected = Double(taken) * Double(budget) / Double(rankedCount)
            low = Self.kthLargest(UnsafeMutableBufferPointer(start: selection, count: taken), min(taken, Int(2 * expected) + 4))
        }
        var starts = [Int](repeating: 0, count: tensors.count + 1)
        var candidates = 0
        while true {
            candidates = 0
            for (ti, t) in tensors.enumerated() {
                starts[ti] = candidates
                guard !small[ti] else { continue }
                let a = acc + t.offset
                if low > 0 {
                    candidates += Self.gather(a, scale: scale.map { $0 + t.offset }, count: t.count, atLeast: low,
                                              positions: positions + candidates, ranks: ranks + candidates)
                } else {
                    candidates += Self.gatherActive(a, scale: scale.map { $0 + t.offset }, mask: m.map { $0 + t.offset }, count: t.count,
                                                    positions: positions + candidates, ranks: ranks + candidates)
                }
            }
            starts[tensors.count] = candidates
            if candidates >= budget || low == 0 { break }
            low = 0
        }
        let (threshold, atThreshold) = Self.threshold(ranks, count: candidates, k: budget, selection: selection)
        var ties = atThreshold
        var indices: [[UInt32]] = [], values: [[Float]] = []
        indices.reserveCapacity(tensors.count); values.reserveCapacity(tensors.count)
        for (ti, t) in tensors.enumerated() {
            let a = acc + t.offset
            let idx = small[ti] ? smallPicks[ti] : Self.pick(positions, ranks, starts[ti] ..< starts[ti + 1], threshold: threshold, ties: &ties)
            indices.append(idx); values.append(Self.send(idx, from: a, codec: settings.codec))
        }
        return SparseGradient(indices: indices, values: values)
    }

    /// After a topology change: inactive weights hold no residual.
    public func follow(_ mask: MaskSet) {
        let a = residual.pointer, m = mask.mask.pointer
        for i in 0 ..< layout.count where m[i] == 0 { a[i] = 0 }
    }

    /// Forgets everything unsent (a new run, or a resync).
    public func reset() { residual.zero() }

    @inline(__always)
    static func magnitude(_ x: Float) -> Float { x.isNaN ? .infinity : abs(x) }

    /// The k-th largest value of `xs` (1-based k ≤ count), reordering it: Hoare's
    /// selection, expected linear time.
    static func kthLargest(_ xs: inout [Float], _ k: Int) -> Float {
        xs.withUnsafeMutableBufferPointer { kthLargest($0, k) }
    }

    /// As above, in place in `p`.
    static func kthLargest(_ p: UnsafeMutableBufferPointer<Float>, _ k: Int) -> Float {
        precondition(k >= 1 && k <= p.count)
        let target = p.count - k  // position in ascending order
        var lo = 0, hi = p.count - 1
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        while lo < hi {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            let pivot = p[lo + Int((seed >> 33) % UInt64(hi - lo + 1))]
            var i = lo, j = hi
            while i <= j {
                while p[i] < pivot { i += 1 }
                while p[j] > pivot { j -= 1 }
                if i <= j { p.swapAt(i, j); i += 1; j -= 1 }
            }
            if target <= j { hi = j } else if target >= i { lo = i } else { return p[target] }
        }
        return p[target]
    }
}

/// The compressor's per-tensor scratch, as raw buffers: the hot loops write through
/// pointers taken once (class-held arrays there cost an exclusivity check and a
/// uniqueness check per element: 45% of a worker's CPU at batch 8 before).
final class SelectionScratch {
    private(set) var capacity = 0
    private var positions: UnsafeMutablePointer<UInt32>?
    private var ranks: UnsafeMutablePointer<Float>?
    private var selection: UnsafeMutablePointer<Float>?

    /// Buffers of at least `count` entries each.
    func pointers(for count: Int) -> (UnsafeMutablePointer<UInt32>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>) {
        if count > capacity || positions == nil {
            release()
            let n = max(count, 1)
            positions = .allocate(capacity: n); ranks = .allocate(capacity: n); selection = .allocate(capacity: n)
            capacity = n
        }
        return (positions!, ranks!, selection!)
    }

    private func release() {
        positions?.deallocate(); ranks?.deallocate(); selection?.deallocate()
        positions = nil; ranks = nil; selection = nil
    }

    deinit { release() }
}
