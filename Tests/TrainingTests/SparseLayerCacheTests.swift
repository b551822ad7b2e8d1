@testable import Compute
import Kernels
import Model
import Sparsity
import Testing
import TestSupport

/// The sparse layouts follow the mask: built again when the mask is edited (a topology
/// update, a checkpoint's mask, a welcome's bitmap, a change from the coordinator) and
/// only then.
@Suite("Sparse layer cache")
struct SparseLayerCacheTests {
    static let config = ViTConfig(imageSize: 8, patchSize: 4, inChannels: 1, numClasses: 3, dim: 8, depth: 2, heads: 2, mlpRatio: 2)

    static func masks(_ model: ViTModel, sparsity: Double, seed: UInt64) -> MaskSet {
        var s = SparsityConfig()
        s.method = .svite
        s.sparsity = sparsity
        return s.makeMethod().initialMasks(model: model, seed: seed)!
    }

    @Test func layoutsAreBuiltAgainOnlyWhenTheMaskChanges() throws {
        let model = ViTModel(config: Self.config)
        let cache = SparseLayerCache(model: model, mode: .on, batch: 4, threads: 1, precision: .fp32, training: true, log: nil)
        let m = Self.masks(model, sparsity: 0.7, seed: 1)
        let first = try #require(cache.layers(for: m))
        #expect(first.sites.count == model.linearSites.count)
        #expect(cache.layers(for: m) === first, "the same mask: the same layouts")
        #expect(cache.layers(for: m) === first)

        m.bumpVersion()
        let afterUpdate = try #require(cache.layers(for: m))
        #expect(afterUpdate !== first, "a topology update lays them out again")
        #expect(cache.layers(for: m) === afterUpdate)

        // A checkpoint or a welcome may set the version back to one seen before: still new.
        let version = m.version
        #expect(m.setBitmap(Self.masks(model, sparsity: 0.7, seed: 2).bitmap, version: version))
        let afterBitmap = try #require(cache.layers(for: m))
        #expect(afterBitmap !== afterUpdate)
        m.restoreVersion(version)
        #expect(cache.layers(for: m) !== afterBitmap)

        // Another mask object (a rejoin's welcome) with the same edits count.
        let other = Self.masks(model, sparsity: 0.7, seed: 1)
        #expect(other.edits == 1)
        #expect(cache.layers(for: other) !== cache.layers(for: m))
    }

    /// What is laid out is the mask's active entries, layer by layer.
    @Test func layoutsHoldTheActiveEntries() throws {
        let model = ViTModel(config: Self.config)
        let cache = SparseLayerCache(model: model, mode: .on, batch: 4, threads: 1, precision: .fp32, training: true, log: nil)
        let m = Self.masks(model, sparsity: 0.6, seed: 3)
        _ = try #require(cache.layers(for: m))
        let choice = try #require(cache.choice)
        for layer in choice.layers {
            let s = layer.site
            let active = (0 ..< s.outFeatures * s.inFeatures).filter { m.mask[s.weight + $0] != 0 }.count
            #expect(layer.activeCount == active && layer.sparse)
        }
    }

    @Test func offDenseAndStructuredMasksLayNothingOut() {
        let model = ViTModel(config: Self.config)
        let off = SparseLayerCache(model: model, mode: .off, batch: 4, threads: 1, precision: .fp32, training: true, log: nil)
        #expect(off.layers(for: Self.masks(model, sparsity: 0.9, seed: 1)) == nil)
        let on = SparseLayerCache(model: model, mode: .on, batch: 4, threads: 1, precision: .fp32, training: true, log: nil)
        #expect(on.layers(for: nil) == nil)
        var s = SparsityConfig()
        s.method = .s2vite
        s.sparsity = 0.5
        let structured = s.makeMethod().initialMasks(model: model, seed: 1)!
        #expect(structured.isStructured && on.layers(for: structured) == nil)
    }
}
