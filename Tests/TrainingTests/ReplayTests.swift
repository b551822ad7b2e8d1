import Compression
import Config
import Core
import Model
import Optim
import Sparsity
import Steps
import Testing
import TestSupport
@testable import Training

/// The update rule is written once (`ModelState.step`, `ModelState.apply`): a replica fed
/// nothing but the server's update records stays equal to the server bit for bit, through
/// prune-and-grow, AdamW's variance freezing with per-tensor scales, and the shared estimate.
@Suite("update records")
struct ReplayTests {
    /// "adamw-bf16", "adamw-int8": the server rounds what it takes to the codec (int8 with
    /// its rounding kept for the next update) and each record goes through its wire form
    /// (half or about a quarter of the gradient's bytes) before the replica replays it.
    @Test(arguments: ["adamw", "sgd", "adamw-bf16", "adamw-int8"])
    func aReplicaDrivenOnlyByTheRecordsEqualsTheServer(variant: String) throws {
        let optimizer = variant.hasPrefix("adamw") ? "adamw" : variant
        let codec: ValueCodec = variant.hasSuffix("bf16") ? .bf16 : variant.hasSuffix("int8") ? .int8 : .fp32, half = codec != .fp32
        let config = try tinyRunConfig(dataDir: "/nonexistent", extra: ["optimizer.name=\(optimizer)", "optimizer.lr=0.01", "sparsity.method=svite",
                                                                          "sparsity.update_interval=3", "sparsity.sparsity=0.5"])
        let model = ViTModel(config: config.model)
        let server = ServerState(model: model, optimizer: config.optimizer,
                                 schedule: LRSchedule(config.schedule, base: config.optimizer.lr, totalSteps: 24, stepsPerEpoch: 8))
        server.enableSparsity(config.sparsity, seed: config.topologySeed)
        server.keepsUpdateGradients = true
        server.updateCodec = codec
        let adamw = optimizer == "adamw"
        if adamw {
            server.varianceFreezeStep = 6
            server.varianceTracker = VarianceTracker(tensors: model.layout.tensors.count, beta2: config.optimizer.beta2)
        }
        var rng = Rand(s: 11)
        for i in 0 ..< server.params.count { server.params.pointer[i] = 0.1 * rng.float() }
        server.masks!.apply(to: server.params)
        // The replica starts from the server's state, as a welcome gives it.
        let replica = ModelState(layout: model.layout, optimizer: Optim.Optimizer(config: config.optimizer, layout: model.layout),
                                 masks: MaskSet(layout: model.layout, prunable: server.masks!.prunable))
        replica.params.pointer.update(from: server.params.pointer, count: server.params.count)
        #expect(replica.masks!.setBitmap(server.masks!.bitmap, version: server.masks!.version))
        #expect(replica.digest == server.state.digest)

        let g = FloatBuffer(count: model.layout.count)
        var topologyUpdates = 0
        for step in 0 ..< 24 {
            for i in 0 ..< g.count { g.pointer[i] = rng.float() }
            let meanSquares = adamw ? (0 ..< model.layout.tensors.count).map { _ in Double(1 + rng.float()) } : nil
            let estimate = adamw && step >= 12
            var record = server.apply(averagedGradient: g.pointer, meanSquares: meanSquares, estimate: estimate).record
            #expect(record.estimate == estimate && record.gradient != nil && record.gradientCodec == codec)
            if half {
                var w = ByteWriter()
                record.encode(into: &w, layout: model.layout)
                var full = record
                full.gradientCodec = .fp32
                var w32 = ByteWriter()
                full.encode(into: &w32, layout: model.layout)
                #expect(w.bytes.count < w32.bytes.count * 3 / 4, "\(w.bytes.count) bytes against \(w32.bytes.count) in fp32")
                if codec == .int8 {
                    // A byte a value less than bf16 (a topology change's values stay fp32).
                    full.gradientCodec = .bf16
                    var w16 = ByteWriter()
                    full.encode(into: &w16, layout: model.layout)
                    let entries = record.gradient?.entries ?? 0
                    #expect(w.bytes.count < w16.bytes.count - entries * 9 / 10, "\(w.bytes.count) bytes against \(w16.bytes.count) in bf16, \(entries) entries")
                }
                var r = ByteReader(w.bytes)
                let context = UpdateContext(layout: model.layout, layerSizes: server.masks!.prunable.map(\.count),
                                            moments: server.optimizer.stateBuffers.count)
                let decoded = try ParameterUpdate.decode(&r, context: context)
                #expect(decoded.gradient == record.gradient, "\(codec) values travel exactly")
                record = decoded
            }
            if record.topology != nil { topologyUpdates += 1 }
            try replica.apply(record)
            #expect(replica.digest == server.state.digest, "step \(step)")
            #expect(replica.masks!.version == server.masks!.version && replica.masks!.bitmap == server.masks!.bitmap)
        }
        #expect(topologyUpdates >= 5, "prune-and-grow ran \(topologyUpdates) times")
        if adamw {
            #expect(server.optimizer.varianceFrozen && replica.optimizer!.varianceFrozen)
            #expect(replica.varianceScale != nil && replica.varianceScale == server.state.varianceScale)
        }
        // A skipped step changes nothing on either side.
        let (skipped, _) = server.skip()
        try replica.apply(skipped)
        #expect(replica.digest == server.state.digest)
    }

    /// int8 updates delay their rounding, they do not lose it: over many steps the values
    /// the records carry plus the coordinator's residual are the gradients' sum; a pruned
    /// weight's residual goes with it; an update of another codec drops the residual.
    @Test func int8UpdatesKeepTheirRounding() throws {
        let config = try tinyRunConfig(dataDir: "/nonexistent", extra: ["optimizer.clip_grad_norm=0", "sparsity.method=svite", "sparsity.sparsity=0.5",
                                                                          "sparsity.update_interval=1000"])
        let model = ViTModel(config: config.model)
        let server = ServerState(model: model, optimizer: config.optimizer,
                                 schedule: LRSchedule(config.schedule, base: config.optimizer.lr, totalSteps: 30, stepsPerEpoch: 10))
        server.enableSparsity(config.sparsity, seed: config.topologySeed)
        server.updateCodec = .int8
        let n = model.layout.count
        let g = FloatBuffer(count: n), sent = FloatBuffer(count: n)
        var rng = Rand(s: 5)
        var sum = [Double](repeating: 0, count: n), carried = sum
        // 0 on inactive weights of prunable tensors, 1 everywhere else.
        var mask = [Float](repeating: 1, count: n)
        for t in server.masks!.prunable { for i in 0 ..< t.count { mask[t.offset + i] = server.masks!.mask.pointer[t.offset + i] } }
        for _ in 0 ..< 20 {
            for i in 0 ..< n { g.pointer[i] = rng.float() * (i % 11 == 0 ? 1 : 1e-3); sum[i] += Double(g.pointer[i] * mask[i]) }
            let record = server.apply(averagedGradient: g.pointer).record
            sent.zero()
            try #require(record.gradient).scatter(into: sent.pointer, layout: model.layout)
            for i in 0 ..< n { carried[i] += Double(sent.pointer[i]) }
        }
        let r = try #require(server.updateResidual).pointer
        let worst = (0 ..< n).map { abs(carried[$0] + Double(r[$0]) - sum[$0]) }.max()!
        #expect(worst < 1e-4, "carried + residual differs from the gradient sum by \(worst)")
        #expect((0 ..< n).contains { r[$0] != 0 } && (0 ..< n).allSatisfy { mask[$0] != 0 || r[$0] == 0 })
        server.updateCodec = .bf16
        _ = server.apply(averagedGradient: g.pointer)
        #expect(server.updateResidual == nil)
    }

    /// What a replay does with a topology change: switched-off places are zero in the
    /// weights and every moment, grown places hold the values the record carries; a change
    /// that does not fit the replica's mask is refused and touches nothing.
    @Test func aTopologyChangeZeroesPrunedPlacesAndSetsGrownOnes() throws {
        let config = try tinyRunConfig(dataDir: "/nonexistent", extra: ["sparsity.method=svite", "sparsity.sparsity=0.5"])
        let model = ViTModel(config: config.model)
        let server = ServerState(model: model, optimizer: config.optimizer,
                                 schedule: LRSchedule(config.schedule, base: config.optimizer.lr, totalSteps: 4, stepsPerEpoch: 4))
        server.enableSparsity(config.sparsity, seed: 3)
        let masks = try #require(server.masks)
        let replica = ModelState(layout: model.layout, optimizer: Optim.Optimizer(config: config.optimizer, layout: model.layout),
                                 masks: MaskSet(layout: model.layout, prunable: masks.prunable))
        #expect(replica.masks!.setBitmap(masks.bitmap, version: masks.version))
        for b in [replica.params] + replica.optimizer!.stateBuffers.map(\.buffer) { for i in 0 ..< b.count { b.pointer[i] = 1 } }
        replica.masks!.apply(to: replica.params)
        let t = masks.prunable[0]
        let active = (0 ..< t.count).first { masks.mask.pointer[t.offset + $0] != 0 }!
        let inactive = (0 ..< t.count).first { masks.mask.pointer[t.offset + $0] == 0 }!
        var layers = masks.prunable.map { _ in TopologyChange.Layer(off: [], on: [], weights: [], moments: [[], []]) }
        layers[0] = TopologyChange.Layer(off: [UInt32(active)], on: [UInt32(inactive)], weights: [0.5], moments: [[0.25], [0.125]])
        let change = TopologyChange(maskVersion: UInt32(masks.version + 1), layers: layers)
        try replica.applyTopology(change)
        let buffers = [replica.params] + replica.optimizer!.stateBuffers.map(\.buffer)
        #expect(buffers.map { $0.pointer[t.offset + active] } == [0, 0, 0])
        #expect(buffers.map { $0.pointer[t.offset + inactive] } == [0.5, 0.25, 0.125])
        #expect(replica.masks!.version == masks.version + 1 && replica.masks!.mask.pointer[t.offset + inactive] == 1)
        // The same change again does not fit (its version, and the places are already so).
        let before = replica.digest
        #expect(throws: ReplayError.self) { try replica.applyTopology(change) }
        #expect(replica.digest == before)
        // Grown values that do not match the grown places are refused before anything changes.
        layers[0].moments = [[0.25]]
        #expect(throws: ReplayError.self) { try replica.applyTopology(TopologyChange(maskVersion: change.maskVersion + 1, layers: layers)) }
        #expect(replica.digest == before)
    }
}
