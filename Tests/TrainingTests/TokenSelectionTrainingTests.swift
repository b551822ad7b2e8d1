import Config
import Core
import Datasets
import Foundation
import Logging
import Model
import Pictures
import Testing
import TestSupport
@testable import Training

/// 28×28 images whose outer ring of 4×4 patches (24 of the 49) is constant black and
/// carries nothing; the inner 5×5 patches hold noise and, as a bright bar at row
/// 2·label + 4, the label.
private func writeBorderIDX(dir: String, train: Int, test: Int) throws {
    try writeSyntheticIDX(dir: dir, train: train, test: test, seed: 11) { image, label, rng in
        for y in 4 ..< 24 { for x in 4 ..< 24 { image[y * 28 + x] = UInt8(20 + rng.next() % 60) } }
        for x in 4 ..< 24 { image[(2 * label + 4) * 28 + x] = 255 }
    }
}

@Suite("SViTE+ selection behaviour", .serialized)
struct TokenSelectionTrainingTests {
    @Test func statisticsSeparateRemovedFromKept() {
        // One 8×8 image, patch 4: patches 0 and 1 black, 2 and 3 white; keep 1 and 3.
        var px = [UInt8](repeating: 0, count: 64)
        for y in 4 ..< 8 { for x in 0 ..< 8 { px[y * 8 + x] = 255 } }
        let s = TokenStatistics(images: [px], channels: 1, size: 8, patch: 4, kept: [[1, 3]])
        #expect(s.keptPatches == 2 && s.removedPatches == 2)
        #expect(s.keptMeanIntensity == 0.5 && s.removedMeanIntensity == 0.5)
        #expect(s.backgroundOverall == 0.5 && s.backgroundAmongRemoved == 0.5 && s.backgroundRemoved == 0.5)
        let t = TokenStatistics(images: [px], channels: 1, size: 8, patch: 4, kept: [[2, 3]])
        #expect(t.backgroundAmongRemoved == 1 && t.backgroundAmongKept == 0 && t.removedMeanIntensity == 0 && t.keptMeanIntensity == 1)
        #expect(t.summary.contains("removes background first"))
        let u = TokenStatistics(images: [px], channels: 1, size: 8, patch: 4, kept: [[0, 1]])
        #expect(u.summary.contains("removes object patches"))
    }

    /// A short run of the default SViTE+ recipe on images whose border patches carry no
    /// information: the trained selector removes the border first. (The paper's recipe,
    /// token-scale relaxation with the signed gradient and full noise, kept the constant
    /// patches and dropped the informative ones on Fashion-MNIST: docs/results/findings.md.)
    @Test func selectorRemovesTheUninformativeBorder() throws {
        try withTemporaryDirectory { dir in
            try writeBorderIDX(dir: dir, train: 960, test: 200)
            let yaml = """
            name: border
            model: {image_size: 28, patch_size: 4, in_channels: 1, num_classes: 10, dim: 24, depth: 2, heads: 2, mlp_ratio: 2, token_keep: 0.5}
            data: {dataset: mnist, dir: \(dir), augmentation: none}
            optimizer: {name: adamw, lr: 3.0e-3, weight_decay: 0.05}
            schedule: {warmup_steps: 10}
            training: {epochs: 6, batch_size: 32, label_smoothing: 0.1, seed: 3, log_every_steps: 50, threads: 2, eval_batch_size: 100}
            """
            let config = try RunConfig.parse(yaml: yaml, file: "border.yaml", overrides: [])
            let trainer = try Trainer(config: config, options: Trainer.Options(runDirectory: "\(dir)/run"), logger: Logger(label: "test"))
            let summary = try trainer.run(stop: StopFlag()) { _ in }
            let test = try config.data.load(.test)
            let kept = TokenSurvey(model: trainer.server.model, params: trainer.server.params.pointer, dataset: test,
                                   mean: config.data.mean, std: config.data.std, count: test.count, batch: 64, threads: 2).kept
            let n = test.count
            let raw = (0 ..< n).map { Array(test.pixels[($0 * 784) ..< (($0 + 1) * 784)]) }
            let stats = TokenStatistics(images: raw, channels: 1, size: 28, patch: 4, kept: kept)
            print("border test: accuracy \(summary.lastEval?.accuracy ?? -1); \(stats.summary)")
            // 24 of 49 patches are border; 25 kept, 24 removed. Chance would remove 49% border.
            #expect(abs(stats.backgroundOverall - 24.0 / 49) < 1e-9)
            #expect(stats.backgroundAmongRemoved >= 0.9, "\(stats.summary)")
            // And the model learns from what it keeps (chance is 0.1; 180 steps of a tiny model).
            #expect((summary.lastEval?.accuracy ?? 0) > 0.2)
        }
    }
}
