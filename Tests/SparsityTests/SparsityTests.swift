import Core
import Kernels
import Model
import Testing
@testable import Sparsity

@Suite("sparsity")
struct SparsityTests {
    let fmnist = ParameterLayout(config: ViTConfig.presets["fmnist-tiny"]!)

    @Test func prunableTensorsAreTheBlockLinears() {
        let p = MaskSet.prunableTensors(fmnist)
        #expect(p.count == 6 * 4)
        #expect(p.allSatisfy { $0.name.hasPrefix("blocks.") && $0.name.hasSuffix(".weight") && $0.shape.count == 2 })
        let all = MaskSet.prunableTensors(fmnist, includeEmbeddingAndHead: true)
        #expect(all.count == 26 && all.contains { $0.name == "head.weight" } && all.contains { $0.name == "patch_embed.proj.weight" })
    }

    @Test(arguments: [0.5, 0.4, 0.1, 0.013])
    func erkHitsTheBudgetExactlyAndFollowsTheFormula(density: Double) {
        let tensors = MaskSet.prunableTensors(fmnist).map { (name: $0.name, shape: $0.shape) }
        let counts = SparsityDistribution.erk.counts(tensors, density: density)
        let total = tensors.reduce(0) { $0 + $1.shape.reduce(1, *) }
        #expect(counts.values.reduce(0, +) == Int((density * Double(total)).rounded()))
        // density_l / ((n_in + n_out)/(n_in·n_out)) is the same ε for every non-dense layer.
        // Checked as counts: each within rounding (±1) of ε·score_l·n_l with one ε.
        var eps = 0.0, weight = 0.0
        for t in tensors {
            let n = Double(t.shape.reduce(1, *)), score = Double(t.shape.reduce(0, +)) / n
            #expect(counts[t.name]! <= Int(n))
            eps += Double(counts[t.name]!); weight += score * n
        }
        eps /= weight
        for t in tensors {
            let n = Double(t.shape.reduce(1, *)), score = Double(t.shape.reduce(0, +)) / n
            #expect(abs(Double(counts[t.name]!) - eps * score * n) <= 1, "\(t.name)")
        }
        // qkv (288×96) gets a lower density than proj (96×96): more weights, same fan sum ratio.
        #expect(counts["blocks.0.attn.qkv.weight"]! * 96 * 96 < counts["blocks.0.attn.proj.weight"]! * 288 * 96)
    }

    @Test func erkMakesSmallLayersDenseAndSolvesAgain() {
        // A 4×4 layer beside two big ones: at density 0.5 its ERK density would exceed 1.
        let tensors = [(name: "small", shape: [4, 4]), (name: "a", shape: [400, 300]), (name: "b", shape: [300, 400])]
        let counts = SparsityDistribution.erk.counts(tensors, density: 0.5)
        #expect(counts["small"] == 16)
        #expect(counts.values.reduce(0, +) == Int((0.5 * Double(16 + 240_000)).rounded()))
        #expect(abs(counts["a"]! - counts["b"]!) <= 1)
    }

    @Test func uniformGivesEveryLayerTheSameDensity() {
        let tensors = MaskSet.prunableTensors(fmnist).map { (name: $0.name, shape: $0.shape) }
        let counts = SparsityDistribution.uniform.counts(tensors, density: 0.3)
        for t in tensors {
            let n = t.shape.reduce(1, *)
            #expect(abs(counts[t.name]! - Int(0.3 * Double(n))) <= 1)
        }
    }

    @Test func decayScheduleValues() {
        let s = UpdateSchedule(interval: 10, endFraction: 0.8, initialFraction: 0.5)
        #expect(s.fraction(step: 0, total: 1000) == nil)
        #expect(s.fraction(step: 15, total: 1000) == nil)
        #expect(abs(s.fraction(step: 10, total: 1000)! - 0.25 * (1 + cos(Double.pi * 10 / 800))) < 1e-12)
        #expect(abs(s.fraction(step: 400, total: 1000)! - 0.25) < 1e-12)  // halfway to T_end: ζ/2
        #expect(s.fraction(step: 800, total: 1000) == nil)               // T_end and after: no updates
        let o = UpdateSchedule(interval: 10, decay: .official)
        #expect(abs(o.fraction(step: 500, total: 1000)! - 0.25) < 1e-12)
        #expect(o.fraction(step: 990, total: 1000)! == 0.005 || o.fraction(step: 990, total: 1000)! > 0.005)
        #expect(o.fraction(step: 900, total: 1000) != nil)
    }

    /// One update: counts kept, the pruned were the smallest active, the grown the largest
    /// gradients among the inactive, grown weights and moments are zero, and inactive
    /// weights stay zero when the mask is applied after optimizer steps.
    @Test func pruneAndGrowInvariants() {
        let layout = ParameterLayout(tensors: [("blocks.0.attn.qkv.weight", [12, 4]), ("blocks.0.attn.qkv.bias", [12]),
                                               ("blocks.0.mlp.fc1.weight", [8, 4])])
        let masks = MaskSet(layout: layout, prunable: MaskSet.prunableTensors(layout))
        #expect(masks.prunable.count == 2)
        let counts = SparsityDistribution.erk.counts(masks.prunable.map { ($0.name, $0.shape) }, density: 0.5)
        masks.randomize(counts: counts, seed: 1)
        let params = FloatBuffer(count: layout.count), grads = FloatBuffer(count: layout.count)
        let m1 = FloatBuffer(count: layout.count), m2 = FloatBuffer(count: layout.count)
        var rng = Xoshiro256(seed: 2)
        for i in 0 ..< layout.count {
            params[i] = rng.nextNormal(); grads[i] = rng.nextNormal(); m1[i] = 1; m2[i] = 2
        }
        masks.apply(to: params)
        let before = masks.prunable.map { masks.activeCount($0) }
        let oldMask = masks.mask.array, oldParams = params.array
        let v0 = masks.version
        let changes = PruneAndGrow.update(masks: masks, params: params, growScore: { UnsafePointer(grads.pointer + $0.offset) },
                                          fraction: 0.3, moments: [m1, m2])
        #expect(masks.version == v0 + 1)
        #expect(masks.prunable.map { masks.activeCount($0) } == before)
        for (t, c) in zip(masks.prunable, changes) {
            let a = before[masks.prunable.firstIndex(of: t)!]
            let k = PruneAndGrow.exchangeCount(active: a, inactive: t.count - a, fraction: 0.3)
            #expect(k == Int((0.3 * Double(a)).rounded(.up)))
            #expect(c.pruned.count == k && c.grown.count == k)
            let activeBefore = (0 ..< t.count).filter { oldMask[t.offset + $0] != 0 }
            let cutoff = c.pruned.map { abs(oldParams[t.offset + $0]) }.max()!
            let kept = activeBefore.filter { !c.pruned.contains($0) }
            #expect(kept.allSatisfy { abs(oldParams[t.offset + $0]) >= cutoff }, "pruned were the smallest")
            let inactiveBefore = (0 ..< t.count).filter { oldMask[t.offset + $0] == 0 }
            #expect(c.grown.allSatisfy { inactiveBefore.contains($0) }, "grown were inactive before")
            let floor = c.grown.map { abs(grads[t.offset + $0]) }.min()!
            let notGrown = inactiveBefore.filter { !c.grown.contains($0) }
            #expect(notGrown.allSatisfy { abs(grads[t.offset + $0]) <= floor }, "grown were the largest gradients")
            for i in c.grown {
                #expect(params[t.offset + i] == 0 && m1[t.offset + i] == 0 && m2[t.offset + i] == 0)
            }
            for i in 0 ..< t.count where masks.mask[t.offset + i] == 0 {
                #expect(params[t.offset + i] == 0, "inactive weights are zero")
            }
        }
        // The bias is not prunable and was left alone.
        let bias = layout.spec("blocks.0.attn.qkv.bias")
        for i in 0 ..< bias.count { #expect(params[bias.offset + i] == oldParams[bias.offset + i]) }
        // Exploration: every weight active at start or grown since.
        #expect(masks.explorationRate > masks.density)
        // Many optimizer-like steps followed by the mask keep inactive weights at zero.
        for _ in 0 ..< 50 {
            for i in 0 ..< layout.count { params[i] += 0.1 * rng.nextNormal() }
            masks.apply(to: params)
        }
        for t in masks.prunable {
            for i in 0 ..< t.count where masks.mask[t.offset + i] == 0 { #expect(params[t.offset + i] == 0) }
        }
    }

    /// The untrained count is the grown weights no update has reached: right after an
    /// update all of them, one fewer for each that moves, and never an inactive zero.
    @Test func untrainedCountsAreTheGrownWeightsStillAtZero() {
        let layout = ParameterLayout(tensors: [("blocks.0.attn.qkv.weight", [12, 4]), ("blocks.0.attn.qkv.bias", [12]),
                                               ("blocks.0.mlp.fc1.weight", [8, 4])])
        let masks = MaskSet(layout: layout, prunable: MaskSet.prunableTensors(layout))
        masks.randomize(counts: SparsityDistribution.erk.counts(masks.prunable.map { ($0.name, $0.shape) }, density: 0.5), seed: 3)
        let params = FloatBuffer(count: layout.count), grads = FloatBuffer(count: layout.count)
        var rng = Xoshiro256(seed: 4)
        for i in 0 ..< layout.count { params[i] = rng.nextNormal(); grads[i] = rng.nextNormal() }
        masks.apply(to: params)
        #expect(masks.untrainedCounts(params.pointer) == [0, 0], "trained weights and inactive zeros are not counted")
        let changes = PruneAndGrow.update(masks: masks, params: params, growScore: { UnsafePointer(grads.pointer + $0.offset) },
                                          fraction: 0.5, moments: [])
        #expect(changes.map(\.grown.count).allSatisfy { $0 > 0 })
        #expect(masks.untrainedCounts(params.pointer) == changes.map(\.grown.count))
        let first = masks.prunable[0]
        params[first.offset + changes[0].grown[0]] = 0.01
        #expect(masks.untrainedCounts(params.pointer) == [changes[0].grown.count - 1, changes[1].grown.count])
    }

    /// A layer denser than 1/(1+f) has fewer inactive weights than ⌈f·active⌉: it swaps
    /// only as many as it can grow, and keeps its count.
    @Test func denseLayersKeepTheirCounts() {
        let layout = ParameterLayout(tensors: [("blocks.0.attn.proj.weight", [10, 10])])
        let masks = MaskSet(layout: layout, prunable: MaskSet.prunableTensors(layout))
        masks.randomize(counts: ["blocks.0.attn.proj.weight": 80], seed: 1)
        let params = FloatBuffer(count: layout.count), g = FloatBuffer(count: layout.count)
        for i in 0 ..< 100 { params[i] = Float(i + 1); g[i] = Float(100 - i) }
        masks.apply(to: params)
        let c = PruneAndGrow.update(masks: masks, params: params, growScore: { _ in UnsafePointer(g.pointer) }, fraction: 0.5, moments: [])
        #expect(c[0].pruned.count == 20 && c[0].grown.count == 20)
        #expect(masks.activeCount(masks.prunable[0]) == 80)
    }

    @Test func randomTopologyHasExactCounts() {
        let masks = MaskSet(layout: fmnist, prunable: MaskSet.prunableTensors(fmnist))
        let counts = SparsityDistribution.erk.counts(masks.prunable.map { ($0.name, $0.shape) }, density: 0.5)
        masks.randomize(counts: counts, seed: 9)
        for t in masks.prunable { #expect(masks.activeCount(t) == counts[t.name]) }
        #expect(abs(masks.density - 0.5) < 1e-6)
        #expect(masks.explorationRate == masks.density)
    }
}

#if canImport(Glibc)
import Glibc
#endif

@Suite("sparsity: what travels")
struct MaskTransportTests {
    @Test func packUnpackBitmapAndChanges() {
        let layout = ParameterLayout(config: ViTConfig(imageSize: 8, patchSize: 4, inChannels: 1, numClasses: 3, dim: 8, depth: 2, heads: 2, mlpRatio: 2))
        let masks = MaskSet(layout: layout, prunable: MaskSet.prunableTensors(layout))
        masks.randomize(counts: SparsityDistribution.erk.counts(masks.prunable.map { ($0.name, $0.shape) }, density: 0.4), seed: 3)
        let w = FloatBuffer(count: layout.count)
        var rng = Xoshiro256(seed: 1)
        for t in layout.tensors { for i in 0 ..< t.count { w[t.offset + i] = rng.nextNormal() } }
        let packed = FloatBuffer(count: layout.count), back = FloatBuffer(count: layout.count)
        masks.pack(w.pointer, into: packed.pointer)
        masks.unpack(packed.pointer, into: back.pointer)
        masks.apply(to: w)
        #expect(back.array == w.array, "unpack(pack(w)) is the masked w")
        #expect(masks.packedCount == layout.parameterCount - masks.totalPrunable + masks.activePrunable)
        // The branch-free pack writes nothing past packedCount values, even when the last
        // prunable entries are inactive; unpack reads nothing past them.
        let exact = FloatBuffer(count: masks.packedCount + 1)
        exact[masks.packedCount] = 12345
        masks.pack(w.pointer, into: exact.pointer)
        #expect(exact[masks.packedCount] == 12345)
        let again = FloatBuffer(count: layout.count)
        masks.unpack(exact.pointer, into: again.pointer)
        #expect(again.array == w.array)

        let other = MaskSet(layout: layout, prunable: masks.prunable)
        #expect(other.setBitmap(masks.bitmap, version: 7))
        #expect(other.mask.array == masks.mask.array && other.version == 7)
        #expect(!other.setBitmap([1, 2], version: 8) && other.version == 7)

        // A change must switch off active weights and on inactive ones.
        let t = masks.prunable[0]
        let on = (0 ..< t.count).first { !masks.isActive(t, $0) }!, off = (0 ..< t.count).first { masks.isActive(t, $0) }!
        var change = masks.prunable.map { _ in (off: [UInt32](), on: [UInt32]()) }
        change[0] = ([UInt32(off)], [UInt32(on)])
        #expect(!other.apply(change: [([UInt32(on)], [])] + change.dropFirst(), version: 8), "switching off an inactive weight is refused")
        #expect(other.apply(change: change, version: 8))
        #expect(other.isActive(t, on) && !other.isActive(t, off) && other.version == 8)
        #expect(other.activePrunable == masks.activePrunable)
    }
}

import CZlib
import Foundation
import Pictures

@Suite("pictures")
struct PictureTests {
    @Test func pngIsWellFormed() throws {
        var img = Image(width: 3, height: 2, channels: 3, fill: 0)
        img[1, 1] = [255, 10, 20]
        let png = [UInt8](try img.png())
        #expect(Array(png.prefix(8)) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        func u32(_ o: Int) -> Int { Int(png[o]) << 24 | Int(png[o + 1]) << 16 | Int(png[o + 2]) << 8 | Int(png[o + 3]) }
        #expect(String(decoding: png[12 ..< 16], as: UTF8.self) == "IHDR" && u32(16) == 3 && u32(20) == 2 && png[24] == 8 && png[25] == 2)
        // IDAT inflates to the filtered rows.
        let idatLength = u32(33)
        #expect(String(decoding: png[37 ..< 41], as: UTF8.self) == "IDAT")
        var raw = [UInt8](repeating: 0, count: 2 * (1 + 9))
        var size = uLong(raw.count)
        let z = Array(png[41 ..< 41 + idatLength])
        #expect(uncompress(&raw, &size, z, uLong(z.count)) == Z_OK && size == 20)
        #expect(Array(raw[10 ..< 20]) == [0, 0, 0, 0, 255, 10, 20, 0, 0, 0])
        // Chunk CRCs are over type and data.
        let crc = UInt32(crc32(0, Array(png[12 ..< 29]), 17))
        #expect(UInt32(u32(29)) == crc)
    }

    @Test func maskPanelsShowInitialCurrentAndExplored() {
        let l = MaskPictures.Layer(name: "x", rows: 4, cols: 2, initial: [1, 0, 0, 0, 0, 0, 0, 0],
                                   current: [0, 1, 0, 0, 0, 0, 0, 0], explored: [1, 1, 0, 0, 0, 0, 0, 0])
        // maxSide 16: each weight is one pixel (zoom 1), in each panel's tint.
        let initial = MaskPictures.heatmap(l.initial, rows: 4, cols: 2, maxSide: 16, colour: MaskPictures.initialColour)
        let current = MaskPictures.heatmap(l.current, rows: 4, cols: 2, maxSide: 16, colour: MaskPictures.currentColour)
        let explored = MaskPictures.heatmap(l.explored, rows: 4, cols: 2, maxSide: 16, colour: MaskPictures.exploredColour)
        #expect(initial.width == 2 && initial.height == 4)
        #expect(initial[0, 0] == [40, 40, 40] && initial[1, 0] == [255, 255, 255])
        #expect(current[1, 0] == [0, 114, 178] && explored[0, 0] == [230, 159, 0] && explored[1, 0] == [230, 159, 0])
        // The exploration panel: weight 1 is active now (blue), weight 0 was active earlier
        // only (orange), the rest never (white).
        let map = MaskPictures.explorationMap(current: l.current, explored: l.explored, rows: 4, cols: 2, maxSide: 16)
        #expect(map[1, 0] == [0, 114, 178] && map[0, 0] == [230, 159, 0] && map[0, 1] == [255, 255, 255])
        // A block half active now and half explored-only mixes the two over white.
        let block = MaskPictures.explorationMap(current: [1, 0, 0, 0], explored: [1, 1, 0, 0], rows: 2, cols: 2, maxSide: 1)
        // 127.5 (white over half) + a quarter of blue (0, 114, 178) + a quarter of orange (230, 159, 0).
        let mixed: [UInt8] = [185, 196, 172]
        #expect(block[0, 0] == mixed, "\(block[0, 0])")
    }

    @Test func tokenPicturesMarkRemovedPatches() {
        // One 4×4 grayscale image of value 10, patch 2 (4 patches), patches 0 and 3 kept, scale 2.
        let rgb = TokenPictures.marked(pixels: [UInt8](repeating: 10, count: 16), channels: 1, size: 4, patch: 2, kept: [0, 3], scale: 2)
        func px(_ x: Int, _ y: Int) -> [UInt8] { Array(rgb[(y * 8 + x) * 3 ..< (y * 8 + x) * 3 + 3]) }
        #expect(rgb.count == 8 * 8 * 3)
        #expect(px(1, 1) == [10, 10, 10] && px(5, 5) == [10, 10, 10])  // patches 0 and 3, kept
        // Patch 1, removed: 70% of the way to grey 175: 10 + 165·0.7 = 125.5 (125.499… in floating point).
        #expect(px(5, 1) == [125, 125, 125])
        #expect(px(4, 1) == [90, 90, 90])  // its frame, a darker grey
    }
}

@Suite("pruning baselines")
struct BaselineTests {
    @Test func schedulesPruneWhenAndHowMuch() {
        let omp = PruningPlan(kind: .oneShot(at: 0.5, taylor: false), targetDensity: 0.4)
        #expect((1 ... 100).compactMap { omp.density(step: $0, total: 100) } == [0.4])
        #expect(omp.density(step: 50, total: 100) == 0.4)
        let gmp = PruningPlan(kind: .gradual(start: 1.0 / 6, end: 0.5, events: 20), targetDensity: 0.4)
        let events = (1 ... 1200).compactMap { t in gmp.density(step: t, total: 1200).map { (t, $0) } }
        #expect(events.count == 20)
        #expect(events.first!.0 > 200 && events.last!.0 == 600)
        #expect(abs(events.last!.1 - 0.4) < 1e-12)
        #expect(abs(events.first!.1 - (1 - 0.6 * (1 - pow(19.0 / 20, 3)))) < 1e-12)
        #expect(zip(events, events.dropFirst()).allSatisfy { $0.1 > $1.1 }, "density falls at every event")
    }

    @Test func globalAndPerLayerMagnitudePruning() {
        let layout = ParameterLayout(tensors: [("blocks.0.attn.qkv.weight", [2, 3]), ("blocks.0.mlp.fc1.weight", [2, 2])])
        let masks = MaskSet(layout: layout, prunable: MaskSet.prunableTensors(layout))
        let p = FloatBuffer(count: layout.count), m1 = FloatBuffer(count: layout.count)
        let a = layout.spec("blocks.0.attn.qkv.weight"), b = layout.spec("blocks.0.mlp.fc1.weight")
        for (i, v) in [0.1, -5, 0.3, 2, -0.05, 1].enumerated() { p[a.offset + i] = Float(v); m1[a.offset + i] = 1 }
        for (i, v) in [4, -0.2, 0.01, 3].enumerated() { p[b.offset + i] = Float(v); m1[b.offset + i] = 1 }
        let c = MagnitudePruning.pruneGlobal(masks: masks, params: p, score: { UnsafePointer(p.pointer + $0.offset) }, keep: 5, moments: [m1])
        #expect(c[0].pruned == [0, 2, 4] && c[1].pruned == [1, 2])
        #expect(masks.activePrunable == 5)
        for i in [0, 2, 4] { #expect(p[a.offset + i] == 0 && m1[a.offset + i] == 0) }
        #expect(p[b.offset] == 4 && m1[b.offset] == 1)
        let d = MagnitudePruning.pruneLayers(masks: masks, params: p, score: { UnsafePointer(p.pointer + $0.offset) },
                                             counts: [a.name: 1, b.name: 2], moments: [])
        #expect(d[0].pruned == [3, 5] && d[1].pruned.isEmpty && masks.activeCount(a) == 1 && masks.activeCount(b) == 2)
    }
}
