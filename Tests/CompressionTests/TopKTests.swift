import Core
import Foundation
import Model
import Sparsity
import Testing
@testable import Compression
import TestSupport

/// k distinct sorted positions below n, drawn uniformly.
func randomPositions(_ k: Int, below n: Int, _ rng: inout Rand) -> [UInt32] {
    var chosen = Set<UInt32>()
    while chosen.count < k { chosen.insert(UInt32(rng.below(n))) }
    return chosen.sorted()
}

@Suite("top-k uplink")
struct TopKTests {
    /// Every code reads back what it wrote, at densities from one in 10,000 to nine in ten
    /// and sizes that are not whole bytes; the chosen code is the smallest of the three.
    @Test func positionCodesRoundTrip() throws {
        var rng = Rand(s: 11)
        for n in [1, 7, 64, 1001, 40_000] {
            for density in [0.0, 0.0001, 0.01, 0.1, 0.3, 0.9, 1.0] {
                let k = min(n, Int((density * Double(n)).rounded()))
                let positions = randomPositions(k, below: n, &rng)
                for codec in PositionCodec.allCases + [nil] {
                    var w = ByteWriter()
                    positions.withUnsafeBufferPointer { PositionCodec.encode($0, bound: n, into: &w, codec: codec) }
                    let expected = positions.withUnsafeBufferPointer { p in
                        PositionCodec.size(codec ?? PositionCodec.best(p, bound: n), p, bound: n)
                    }
                    #expect(w.bytes.count == expected, "n \(n) k \(k) \(String(describing: codec)): \(w.bytes.count) bytes, size says \(expected)")
                    var r = ByteReader(w.bytes)
                    var back: [UInt32] = []
                    try PositionCodec.decode(&r, bound: n, maxCount: n, into: &back)
                    #expect(back == positions && r.remaining == 0, "n \(n) k \(k) \(String(describing: codec))")
                }
                let sizes = positions.withUnsafeBufferPointer { p in PositionCodec.allCases.map { PositionCodec.size($0, p, bound: n) } }
                let best = positions.withUnsafeBufferPointer { PositionCodec.best($0, bound: n) }
                #expect(positions.withUnsafeBufferPointer { PositionCodec.size(best, $0, bound: n) } == sizes.min())
            }
        }
    }

    /// Bits per index against the entropy of k random positions among n (log2 C(n, k) / k):
    /// the chosen code is within 0.1 bit of it (plus its few header bytes spread over the
    /// indices) from 0.1% to 10% density, where Rice coding wins; delta-varint costs bits more.
    @Test func positionCodesComeCloseToTheEntropy() {
        var rng = Rand(s: 5)
        let n = 200_000
        for density in [0.001, 0.01, 0.05, 0.1] {
            let k = Int(density * Double(n))
            let positions = randomPositions(k, below: n, &rng)
            var logChoose = 0.0
            for i in 0 ..< k { logChoose += log2(Double(n - i)) - log2(Double(i + 1)) }
            let entropy = logChoose / Double(k)
            let (best, varint) = positions.withUnsafeBufferPointer { p in
                (Double(PositionCodec.size(PositionCodec.best(p, bound: n), p, bound: n) * 8) / Double(k),
                 Double(PositionCodec.size(.deltaVarint, p, bound: n) * 8) / Double(k))
            }
            print(String(format: "positions at density %.3f of %d: %.2f bits per index (entropy %.2f, delta-varint %.2f)", density, n, best, entropy, varint))
            #expect(best <= entropy + 0.1 + 48 / Double(k), "density \(density): \(best) bits per index, entropy \(entropy)")
            #expect(best < varint, "density \(density): best \(best), varint \(varint)")
        }
    }

    /// Random and mutated position lists never crash the decoder: each is refused or reads
    /// back as strictly increasing positions below the bound.
    @Test func fuzzedPositionsAreRefusedNotFatal() {
        var rng = Rand(s: 99)
        var base = ByteWriter()
        randomPositions(50, below: 1000, &rng).withUnsafeBufferPointer { PositionCodec.encode($0, bound: 1000, into: &base, codec: .rice) }
        var accepted = 0
        for trial in 0 ..< 20_000 {
            var bytes: [UInt8]
            if trial % 2 == 0 {
                bytes = (0 ..< rng.below(64)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            } else {
                bytes = base.bytes
                for _ in 0 ..< 1 + rng.below(4) { bytes[rng.below(bytes.count)] ^= UInt8(truncatingIfNeeded: 1 << rng.below(8)) }
            }
            var r = ByteReader(bytes)
            var out: [UInt32] = []
            if (try? PositionCodec.decode(&r, bound: 1000, maxCount: 1000, into: &out)) != nil {
                accepted += 1
                #expect(zip(out, out.dropFirst()).allSatisfy { $0 < $1 } && out.allSatisfy { $0 < 1000 })
            }
        }
        #expect(accepted > 0)
    }

    /// Hoare selection agrees with sorting, duplicates included.
    @Test func kthLargestMatchesSorting() {
        var rng = Rand(s: 3)
        for n in [1, 2, 5, 100, 1000] {
            for _ in 0 ..< 20 {
                let xs = (0 ..< n).map { _ in Float(rng.below(n / 2 + 1)) }
                let k = 1 + rng.below(n)
                var copy = xs
                let kth = TopKCompressor.kthLargest(&copy, k)
                #expect(kth == xs.sorted(by: >)[k - 1])
                // The compressor counts the entries above the k-th from the k-1 after it.
                #expect(copy[(n - k + 1)...].allSatisfy { $0 >= kth } && copy[..<(n - k)].allSatisfy { $0 <= kth })
            }
        }
    }

    /// Many equal magnitudes: exactly k are sent, every entry above the k-th largest and
    /// then the ties at it in position order.
    /// Ranked by the update (rank_by: update), an entry whose gradient is small but whose
    /// AdamW variance is smaller still goes first; the residual keeps exactly what was not
    /// sent either way, and a NaN is sent first whatever its variance.
    @Test func rankingByTheUpdateDividesByTheVariance() {
        let layout = ParameterLayout(tensors: [("w", [2, 3])])
        let g: [Float] = [1, 0.1, 0.5, 0.2, -0.3, 0.05]
        let v: [Float] = [100, 1e-4, 1, 1, .nan, 1e-6]   // updates 0.1, 10, 0.5, 0.2, 3e7 (NaN v as 0), 50
        let density = 3.0 / 6
        let byGradient = TopKCompressor(layout: layout)
        #expect(byGradient.compress(g, mask: nil, density: density).indices[0] == [0, 2, 4])
        let byUpdate = TopKCompressor(layout: layout)
        let s = v.withUnsafeBufferPointer { byUpdate.compress(g, mask: nil, density: density, variance: $0.baseAddress!) }
        #expect(s.indices[0] == [1, 4, 5] && s.values[0] == [0.1, -0.3, 0.05])
        #expect((0 ..< 6).map { byUpdate.residual.pointer[$0] } == [1, 0, 0.5, 0.2, 0, 0])
        var bad = g
        bad[3] = .nan
        let n = v.withUnsafeBufferPointer { TopKCompressor(layout: layout).compress(bad, mask: nil, density: 1.0 / 6, variance: $0.baseAddress!) }
        #expect(n.indices[0] == [3] && n.values[0][0].isNaN)
    }

    /// Tensors big enough for the sampled candidates select exactly what sorting selects:
    /// random gradients with masks and ties, one whose samples all fall on zeros, and one
    /// whose samples are its only large entries (fewer than k reach the sampled bound, so
    /// everything is gathered again).
    @Test func sampledCandidatesSelectExactlyTheTopK() {
        let layout = ParameterLayout(tensors: [("w", [128, 128]), ("v", [64, 100])])
        let n0 = 128 * 128
        var rng = Rand(s: 23)
        func reference(_ g: [Float], _ mask: MaskSet?, density: Double) -> [[UInt32]] {
            layout.tensors.map { t in
                let active = (0 ..< t.count).filter { i in mask.map { $0.mask.pointer[t.offset + i] != 0 } ?? true }
                let k = TopKCompressor.k(density: density, active: active.count)
                // Stable by position among equal magnitudes: the first ties go.
                let order = active.sorted { (abs(g[t.offset + $0]), -$0) > (abs(g[t.offset + $1]), -$1) }
                return order.prefix(k).sorted().map { UInt32($0) }
            }
        }
        for trial in 0 ..< 12 {
            var g = [Float](repeating: 0, count: layout.count)
            switch trial % 3 {
            case 0: for i in g.indices { g[i] = Float(rng.below(50)) * (rng.below(2) == 0 ? 0.01 : -0.01) }
            case 1: for i in g.indices where (i % 16) != 0 { g[i] = Float(rng.below(1000)) + 1 }  // samples see zeros
            default:
                for i in g.indices { g[i] = Float(rng.below(100)) * 1e-3 }
                let n = TopKCompressor.sampleSize
                for j in 0 ..< n { g[j * n0 / n] = 100 }  // the sample sees only these
            }
            let mask: MaskSet? = trial < 6 ? nil : {
                let m = MaskSet(layout: layout, prunable: layout.tensors)
                for i in 0 ..< layout.count where rng.below(3) == 0 { m.mask.pointer[i] = 0 }
                return m
            }()
            if let mask { for i in 0 ..< layout.count where mask.mask.pointer[i] == 0 { g[i] = 0 } }
            let density = trial % 3 == 2 ? 0.15 : [0.001, 0.01, 0.05][trial % 3 == 0 ? (trial / 3) % 3 : 1]
            let s = TopKCompressor(layout: layout).compress(g, mask: mask, density: density)
            #expect(s.indices == reference(g, mask, density: density), "trial \(trial)")
        }
    }

    @Test func tiesAreSentInPositionOrder() {
        let layout = ParameterLayout(tensors: [("w", [40, 10])])
        var rng = Rand(s: 5)
        for _ in 0 ..< 10 {
            let c = TopKCompressor(layout: layout)
            let g = FloatBuffer(count: layout.count)
            for i in 0 ..< layout.count { g.pointer[i] = Float(rng.below(4)) * (rng.below(2) == 0 ? 1 : -1) }
            let density = Double(1 + rng.below(layout.count)) / Double(layout.count)
            let k = TopKCompressor.k(density: density, active: layout.count)
            let threshold = (0 ..< layout.count).map { abs(g.pointer[$0]) }.sorted(by: >)[k - 1]
            let above = (0 ..< layout.count).filter { abs(g.pointer[$0]) > threshold }
            let ties = (0 ..< layout.count).filter { abs(g.pointer[$0]) == threshold }.prefix(k - above.count)
            let s = c.compress(g.pointer, mask: nil, density: density)
            #expect(s.indices[0] == (above + ties).sorted().map { UInt32($0) })
        }
    }

    func smallLayout() -> ParameterLayout {
        ParameterLayout(tensors: [("blocks.0.attn.qkv.weight", [48, 16]), ("blocks.0.attn.qkv.bias", [48]), ("head.weight", [10, 16])])
    }

    /// Over many steps, what was sent plus what is left in the residual is, weight by
    /// weight, the sum of the gradients (fp32 values: to rounding; bf16 and int8 values
    /// too, since their rounding stays in the residual); each tensor sends exactly k entries, and
    /// they are its largest: nothing left behind is larger than anything sent.
    @Test func sentPlusResidualIsTheGradientSum() {
        let layout = smallLayout()
        for codec in [ValueCodec.fp32, .bf16, .int8] {
            let c = TopKCompressor(layout: layout)
            var rng = Rand(s: 17)
            var gradientSum = [Double](repeating: 0, count: layout.count), sentSum = gradientSum
            let g = FloatBuffer(count: layout.count)
            for _ in 0 ..< 40 {
                for i in 0 ..< layout.count { g.pointer[i] = rng.float() * (i % 5 == 0 ? 3 : 1); gradientSum[i] += Double(g.pointer[i]) }
                let before = (0 ..< layout.count).map { c.residual.pointer[$0] + g.pointer[$0] }
                let s = c.compress(g.pointer, mask: nil, density: 0.05, settings: TopKSettings(codec: codec))
                for (t, spec) in layout.tensors.enumerated() {
                    #expect(s.indices[t].count == TopKCompressor.k(density: 0.05, active: spec.count))
                    let sent = Set(s.indices[t])
                    let smallestSent = s.indices[t].map { abs(before[spec.offset + Int($0)]) }.min() ?? .infinity
                    let largestLeft = (0 ..< spec.count).filter { !sent.contains(UInt32($0)) }.map { abs(before[spec.offset + $0]) }.max() ?? 0
                    #expect(largestLeft <= smallestSent, "\(spec.name): left \(largestLeft) > sent \(smallestSent)")
                    for (j, p) in s.indices[t].enumerated() { sentSum[spec.offset + Int(p)] += Double(s.values[t][j]) }
                }
            }
            let worst = (0 ..< layout.count).map { abs(sentSum[$0] + Double(c.residual.pointer[$0]) - gradientSum[$0]) }.max()!
            #expect(worst < 1e-4, "\(codec): sent + residual differs from the gradient sum by \(worst)")
        }
    }

    /// topk_scope model: the same number of entries as k per tensor, given to the largest
    /// ranks of the whole model (a tensor of large steps takes more than its share, one of
    /// small steps less), exactly (sampled bound or not, with a mask or not), with the
    /// tensor factors in the ranks, biases whole, and nothing lost to the residual.
    @Test func topKAcrossTensorsTakesTheLargestRanksOfTheModel() {
        let layout = ParameterLayout(tensors: [("blocks.0.mlp.fc1.weight", [64, 96]), ("blocks.0.mlp.fc1.bias", [64]),
                                               ("blocks.0.mlp.fc2.weight", [32, 64]), ("head.weight", [10, 32])])
        let prunable = layout.tensors.filter { $0.name.hasSuffix("fc1.weight") }
        for masked in [false, true] {
            let masks = MaskSet(layout: layout, prunable: prunable)
            masks.randomize(counts: [prunable[0].name: 3000], seed: 2)
            let mask = masked ? masks : nil
            let c = TopKCompressor(layout: layout)
            var rng = Rand(s: masked ? 3 : 4)
            let g = FloatBuffer(count: layout.count), v = FloatBuffer(count: layout.count)
            var sum = [Double](repeating: 0, count: layout.count), sent = sum
            let factors: [Float] = [1, 1, 0.25, 2]
            for _ in 0 ..< 6 {
                // fc2's gradients are four times fc1's: it should take more than its share.
                for (ti, t) in layout.tensors.enumerated() {
                    for i in t.offset ..< t.offset + t.count {
                        g.pointer[i] = rng.float() * (ti == 2 ? 4 : 1); v.pointer[i] = 0.5 + abs(rng.float())
                        if masks.mask.pointer[i] != 0 || !masked { sum[i] += Double(g.pointer[i]) }
                    }
                }
                let before = (0 ..< layout.count).map { c.residual.pointer[$0] + g.pointer[$0] }
                let s = c.compress(g.pointer, mask: mask, density: 0.02, settings: TopKSettings(denseVectors: true, acrossTensors: true),
                                   variance: v.pointer, tensorScale: factors)
                func rank(_ i: Int, _ ti: Int) -> Float { abs(before[i]) / (v.pointer[i].squareRoot() * factors[ti] + 1e-8) }
                let ranked = [0, 2, 3]
                let budget = ranked.map { ti in TopKCompressor.k(density: 0.02, active: mask.map { $0.activeCount(layout.tensors[ti]) } ?? layout.tensors[ti].count) }.reduce(0, +)
                #expect(ranked.map { s.indices[$0].count }.reduce(0, +) == budget)
                #expect(s.indices[1].count == 64, "the bias goes whole")
                var smallestSent = Float.infinity, largestLeft: Float = 0
                for ti in ranked {
                    let t = layout.tensors[ti], chosen = Set(s.indices[ti])
                    for i in 0 ..< t.count where mask.map({ $0.mask.pointer[t.offset + i] != 0 }) ?? true {
                        let r = rank(t.offset + i, ti)
                        if chosen.contains(UInt32(i)) { smallestSent = min(smallestSent, r) } else { largestLeft = max(largestLeft, r) }
                    }
                    #expect(s.indices[ti].allSatisfy { p in mask.map { $0.mask.pointer[t.offset + Int(p)] != 0 } ?? true })
                }
                #expect(largestLeft <= smallestSent * (1 + 1e-6), "left \(largestLeft) > sent \(smallestSent)")
                #expect(s.indices[2].count > TopKCompressor.k(density: 0.02, active: 2048), "fc2 takes more than its share")
                for (ti, t) in layout.tensors.enumerated() { for (j, p) in s.indices[ti].enumerated() { sent[t.offset + Int(p)] += Double(s.values[ti][j]) } }
            }
            let worst = (0 ..< layout.count).map { abs(sent[$0] + Double(c.residual.pointer[$0]) - sum[$0]) }.max()!
            #expect(worst < 1e-4, "sent + residual differs from the gradient sum by \(worst)")
        }
    }

    /// With a mask: inactive weights are never sent and hold no residual, k counts only
    /// the active ones, and after a topology change the pruned weights' residual is gone
    /// and the grown ones start from zero.
    @Test func theResidualFollowsTheMask() {
        let layout = smallLayout()
        let prunable = layout.tensors.filter { $0.name.hasSuffix("qkv.weight") }
        let masks = MaskSet(layout: layout, prunable: prunable)
        masks.randomize(counts: [prunable[0].name: 300], seed: 4)
        let c = TopKCompressor(layout: layout)
        let g = FloatBuffer(count: layout.count)
        var rng = Rand(s: 8)
        for i in 0 ..< layout.count { g.pointer[i] = rng.float() }
        let s = c.compress(g.pointer, mask: masks, density: 0.1)
        let qkv = layout.tensors[0]
        #expect(s.indices[0].count == TopKCompressor.k(density: 0.1, active: 300))
        #expect(s.indices[0].allSatisfy { masks.mask.pointer[qkv.offset + Int($0)] == 1 })
        #expect((0 ..< qkv.count).allSatisfy { masks.mask.pointer[qkv.offset + $0] == 1 || c.residual.pointer[qkv.offset + $0] == 0 })
        // Prune every active weight with residual left, grow others: none keeps a residual.
        let held = (0 ..< qkv.count).filter { c.residual.pointer[qkv.offset + $0] != 0 }
        #expect(!held.isEmpty)
        for i in held { masks.mask.pointer[qkv.offset + i] = 0 }
        c.follow(masks)
        #expect((0 ..< qkv.count).allSatisfy { c.residual.pointer[qkv.offset + $0] == 0 })
    }

    /// The shared estimate: the worker's momentum is AdamW's moving average of its
    /// gradients (checked against a Double reference), each tensor sends exactly its k
    /// largest differences M − G and their values as they are, and the estimate moved by
    /// what was sent equals M at the sent places while no unsent entry is off by more than
    /// the smallest sent difference. A constant gradient is tracked: after enough steps
    /// every entry of G is within a hair of it, though each step sent only 5%.
    @Test func theEstimateSendsTheLargestDifferencesAndTracksTheMomentum() {
        let layout = smallLayout()
        let c = EstimateCompressor(layout: layout)
        let n = layout.count, beta: Float = 0.9
        var rng = Rand(s: 23)
        let estimate = FloatBuffer(count: n), g = FloatBuffer(count: n)
        for i in 0 ..< n { estimate.pointer[i] = 0.1 * rng.float() }
        // M starts from G.
        var reference = (0 ..< n).map { Double(estimate.pointer[$0]) }
        let steady = (0 ..< n).map { _ in rng.float() }
        for step in 0 ..< 300 {
            let noisy = step < 40
            for i in 0 ..< n { g.pointer[i] = noisy ? rng.float() * (i % 5 == 0 ? 3 : 1) : steady[i] }
            for i in 0 ..< n { reference[i] = Double(beta) * reference[i] + Double(1 - beta) * Double(g.pointer[i]) }
            let s = c.compress(g.pointer, estimate: estimate.pointer, beta: beta, mask: nil, density: 0.05)
            if noisy {
                let worstM = (0 ..< n).map { abs(Double(c.momentum.pointer[$0]) - reference[$0]) }.max()!
                #expect(worstM < 1e-5, "step \(step): the momentum is off its reference by \(worstM)")
            }
            for (t, spec) in layout.tensors.enumerated() {
                #expect(s.indices[t].count == TopKCompressor.k(density: 0.05, active: spec.count))
                let difference = (0 ..< spec.count).map { c.momentum.pointer[spec.offset + $0] - estimate.pointer[spec.offset + $0] }
                let sent = Set(s.indices[t].map(Int.init))
                let smallestSent = sent.map { abs(difference[$0]) }.min() ?? .infinity
                let largestLeft = (0 ..< spec.count).filter { !sent.contains($0) }.map { abs(difference[$0]) }.max() ?? 0
                #expect(largestLeft <= smallestSent, "\(spec.name): left \(largestLeft) > sent \(smallestSent)")
                for (j, p) in s.indices[t].enumerated() { #expect(s.values[t][j] == difference[Int(p)]) }
            }
            // The coordinator's side: G += what was sent (one worker: the merged change).
            s.add(into: estimate.pointer, weight: 1, layout: layout)
            for (t, spec) in layout.tensors.enumerated() {
                for p in s.indices[t] {
                    let i = spec.offset + Int(p)
                    #expect(abs(estimate.pointer[i] - c.momentum.pointer[i]) <= 1e-6 * max(1, abs(c.momentum.pointer[i])))
                }
            }
        }
        let worst = (0 ..< n).map { abs(estimate.pointer[$0] - steady[$0]) }.max()!
        #expect(worst < 1e-3, "a constant gradient: the estimate is off it by \(worst)")
    }

    /// With a mask the momentum and the differences are zero on inactive weights and never
    /// sent; after a topology change the pruned weights hold no momentum and the grown ones
    /// start at the estimate's value. A non-finite gradient is sent (and refused by the
    /// coordinator) and the momentum starts again from the estimate.
    @Test func theEstimateFollowsTheMaskAndForgetsANaN() {
        let layout = smallLayout()
        let prunable = layout.tensors.filter { $0.name.hasSuffix("qkv.weight") }
        let masks = MaskSet(layout: layout, prunable: prunable)
        masks.randomize(counts: [prunable[0].name: 300], seed: 4)
        let c = EstimateCompressor(layout: layout)
        let estimate = FloatBuffer(count: layout.count), g = FloatBuffer(count: layout.count)
        var rng = Rand(s: 9)
        for i in 0 ..< layout.count { g.pointer[i] = rng.float(); estimate.pointer[i] = masks.mask.pointer[i] == 0 ? 0 : 0.5 }
        let qkv = layout.tensors[0]
        let s = c.compress(g.pointer, estimate: estimate.pointer, beta: 0.9, mask: masks, density: 0.1)
        #expect(s.indices[0].count == TopKCompressor.k(density: 0.1, active: 300))
        #expect(s.indices[0].allSatisfy { masks.mask.pointer[qkv.offset + Int($0)] == 1 })
        #expect((0 ..< qkv.count).allSatisfy { masks.mask.pointer[qkv.offset + $0] == 1 || c.momentum.pointer[qkv.offset + $0] == 0 })
        // Swap: prune 10 active places, grow 10 inactive ones (their estimate set as a replay would).
        let active = (0 ..< qkv.count).filter { masks.mask.pointer[qkv.offset + $0] == 1 }.prefix(10)
        let inactive = (0 ..< qkv.count).filter { masks.mask.pointer[qkv.offset + $0] == 0 }.prefix(10)
        for i in active { masks.mask.pointer[qkv.offset + i] = 0; estimate.pointer[qkv.offset + i] = 0 }
        for i in inactive { masks.mask.pointer[qkv.offset + i] = 1; estimate.pointer[qkv.offset + i] = 0.25 }
        c.follow(masks, estimate: estimate.pointer)
        #expect(active.allSatisfy { c.momentum.pointer[qkv.offset + $0] == 0 })
        #expect(inactive.allSatisfy { c.momentum.pointer[qkv.offset + $0] == 0.25 })
        // A NaN goes out, and the next step's momentum is the estimate's again.
        g.pointer[qkv.offset + active.first! + 1] = .nan
        masks.mask.pointer[qkv.offset + active.first! + 1] = 1
        let bad = c.compress(g.pointer, estimate: estimate.pointer, beta: 0.9, mask: masks, density: 0.1)
        #expect(bad.values[0].contains { $0.isNaN } && !c.started)
        for i in 0 ..< layout.count { g.pointer[i] = 0 }
        _ = c.compress(g.pointer, estimate: estimate.pointer, beta: 0.9, mask: masks, density: 0.1)
        #expect((0 ..< layout.count).allSatisfy { c.momentum.pointer[$0].isFinite })
        #expect((0 ..< layout.count).allSatisfy { masks.mask.pointer[$0] == 0 || c.momentum.pointer[$0] == 0.9 * estimate.pointer[$0] })
    }

    /// A NaN is sent (the coordinator refuses it) rather than kept in the residual forever.
    @Test func aNaNIsSentNotHidden() {
        let layout = smallLayout()
        let c = TopKCompressor(layout: layout)
        let g = FloatBuffer(count: layout.count)
        g.pointer[layout.tensors[0].offset + 77] = .nan
        let s = c.compress(g.pointer, mask: nil, density: 0.01)
        #expect(s.indices[0].contains(77) && s.values[0].contains { $0.isNaN })
        #expect((0 ..< layout.count).allSatisfy { c.residual.pointer[$0].isFinite })
    }

    /// The sparse gradient reads back into the full layout as the values at their places,
    /// and a frame for another layout is refused.
    @Test func sparseGradientsRoundTrip() throws {
        let layout = smallLayout()
        let c = TopKCompressor(layout: layout)
        let g = FloatBuffer(count: layout.count)
        var rng = Rand(s: 21)
        for i in 0 ..< layout.count { g.pointer[i] = rng.float() }
        let s = c.compress(g.pointer, mask: nil, density: 0.2)
        var w = ByteWriter()
        s.encode(codec: .fp32, layout: layout, into: &w)
        let out = FloatBuffer(count: layout.count)
        var r = ByteReader(w.bytes)
        let back = try SparseGradient.decode(&r, codec: .fp32, layout: layout)
        #expect(back == s && r.remaining == 0)
        back.add(into: out.pointer, weight: 1, layout: layout)
        for i in 0 ..< layout.count {
            #expect(out.pointer[i] == (c.residual.pointer[i] == 0 ? g.pointer[i] : 0) || g.pointer[i] == 0)
        }
        let other = ParameterLayout(tensors: [("head.weight", [10, 16])])
        var r2 = ByteReader(w.bytes)
        #expect(throws: WireError.self) { _ = try SparseGradient.decode(&r2, codec: .fp32, layout: other) }
    }

    /// The downlink's update frame reads back as written: the merged gradient (−0 kept),
    /// the topology change with its grown weights and moments, the checksum, every
    /// worker's share; a frame cut short or mutated is refused, never fatal.
    @Test func denseVectorsSendBiasesWhole() {
        let layout = smallLayout()
        let c = TopKCompressor(layout: layout)
        let g = FloatBuffer(count: layout.count)
        var rng = Rand(s: 9)
        for i in 0 ..< layout.count { g.pointer[i] = rng.float() }
        let s = c.compress(g.pointer, mask: nil, density: 0.05, settings: TopKSettings(denseVectors: true))
        for (t, spec) in layout.tensors.enumerated() {
            let expected = spec.shape.count == 1 ? spec.count : TopKCompressor.k(density: 0.05, active: spec.count)
            #expect(s.indices[t].count == expected, "\(spec.name)")
        }
        let bias = layout.tensors[1]
        #expect((0 ..< bias.count).allSatisfy { c.residual.pointer[bias.offset + $0] == 0 })
    }

    /// small_tensor_density: the small tensors (vectors, dense_below) send the exact top
    /// ⌈d · active⌉ of residual plus gradient instead of all of it, d never below the
    /// step's density, and keep the rest; the big tensors keep their own k; over steps
    /// nothing is lost; the same per tensor and with k over the whole model, masked or not.
    @Test func smallTensorDensitySendsTheTopShareOfSmallTensors() {
        let layout = smallLayout()
        let sizes = layout.tensors.map(\.count).sorted()
        let bound = sizes[sizes.count / 2]
        let prunable = layout.tensors.filter { $0.count > bound && $0.shape.count > 1 }
        for acrossTensors in [false, true] {
            for masked in [false, true] {
                let masks = MaskSet(layout: layout, prunable: prunable)
                masks.randomize(counts: Dictionary(uniqueKeysWithValues: prunable.map { ($0.name, $0.count / 2) }), seed: 5)
                let mask = masked ? masks : nil
                for (small, density) in [(0.25, 0.05), (0.01, 0.05)] {
                    let c = TopKCompressor(layout: layout)
                    var rng = Rand(s: 21)
                    let g = FloatBuffer(count: layout.count)
                    var gradientSum = [Double](repeating: 0, count: layout.count), sentSum = gradientSum
                    var bigSent = 0, bigBudget = 0
                    for _ in 0 ..< 30 {
                        for i in 0 ..< layout.count {
                            let active = mask.map { $0.mask.pointer[i] != 0 } ?? true
                            g.pointer[i] = active ? rng.float() : 0; gradientSum[i] += Double(g.pointer[i])
                        }
                        let before = (0 ..< layout.count).map { c.residual.pointer[$0] + g.pointer[$0] }
                        let s = c.compress(g.pointer, mask: mask, density: density,
                                           settings: TopKSettings(denseVectors: true, denseBelow: bound, smallDensity: small,
                                                                  acrossTensors: acrossTensors))
                        for (t, spec) in layout.tensors.enumerated() {
                            let active = mask.map { $0.activeCount(spec) } ?? spec.count
                            let isSmall = spec.shape.count == 1 || spec.count <= bound
                            if isSmall {
                                #expect(s.indices[t].count == TopKCompressor.k(density: max(small, density), active: active), "\(spec.name)")
                                // Exactly the largest: nothing left is larger than anything sent.
                                let sent = Set(s.indices[t])
                                let smallestSent = s.indices[t].map { abs(before[spec.offset + Int($0)]) }.min() ?? .infinity
                                let largestLeft = (0 ..< spec.count).filter { !sent.contains(UInt32($0)) }.map { abs(before[spec.offset + $0]) }.max() ?? 0
                                #expect(largestLeft <= smallestSent, "\(spec.name): left \(largestLeft) > sent \(smallestSent)")
                            } else {
                                bigSent += s.indices[t].count; bigBudget += TopKCompressor.k(density: density, active: active)
                                if !acrossTensors { #expect(s.indices[t].count == TopKCompressor.k(density: density, active: active), "\(spec.name)") }
                            }
                            for (j, p) in s.indices[t].enumerated() { sentSum[spec.offset + Int(p)] += Double(s.values[t][j]) }
                        }
                    }
                    #expect(bigSent == bigBudget, "the big tensors send \(bigSent), their k sum to \(bigBudget)")
                    let worst = (0 ..< layout.count).map { abs(sentSum[$0] + Double(c.residual.pointer[$0]) - gradientSum[$0]) }.max()!
                    #expect(worst < 1e-4, "sent + residual differs from the gradient sum by \(worst)")
                }
            }
        }
    }

    /// dense_below sends every tensor of at most that many weights whole and leaves it no
    /// residual; bigger ones still send their top k, also when a mask leaves fewer active.
    @Test func smallTensorsGoWholeUnderDenseBelow() {
        let layout = smallLayout()
        let c = TopKCompressor(layout: layout)
        let g = FloatBuffer(count: layout.count)
        var rng = Rand(s: 11)
        for i in 0 ..< layout.count { g.pointer[i] = rng.float() }
        let sizes = layout.tensors.map(\.count).sorted()
        let bound = sizes[sizes.count / 2]
        #expect(sizes.first! <= bound && sizes.last! > bound, "the layout needs tensors on both sides of \(bound)")
        let s = c.compress(g.pointer, mask: nil, density: 0.05, settings: TopKSettings(denseBelow: bound))
        for (t, spec) in layout.tensors.enumerated() {
            let whole = spec.count <= bound
            #expect(s.indices[t].count == (whole ? spec.count : TopKCompressor.k(density: 0.05, active: spec.count)), "\(spec.name)")
            if whole { #expect((0 ..< spec.count).allSatisfy { c.residual.pointer[spec.offset + $0] == 0 }, "\(spec.name)") }
        }
        // The 768-weight qkv pruned to 100 active (fewer than the bound): still top-k.
        let qkv = layout.tensors[0]
        let masks = MaskSet(layout: layout, prunable: [qkv])
        masks.randomize(counts: [qkv.name: 100], seed: 3)
        let m = TopKCompressor(layout: layout).compress(g.pointer, mask: masks, density: 0.05, settings: TopKSettings(denseBelow: bound))
        #expect(qkv.count > bound && m.indices[0].count == TopKCompressor.k(density: 0.05, active: 100))
    }
}
