import Core
import Datasets
import Foundation
import Kernels
import Logging
import Config
import Training
import TestSupport
import Testing

@Suite("data")
struct DataTests {
    @Test func idxRoundTripThroughGzipAndPlainFiles() throws {
        try withTemporaryDirectory { dir in
            let a = IDXArray(dimensions: [3, 2, 4], bytes: (0 ..< 24).map { UInt8($0 * 7 % 256) })
            try Gzip.write("\(dir)/a.gz", a.encoded())
            #expect(try IDXArray.parse(try Gzip.readAll("\(dir)/a.gz"), file: "a.gz") == a)
            try Data(a.encoded()).write(to: URL(fileURLWithPath: "\(dir)/a"))
            #expect(try IDXArray.parse(try Gzip.readAll("\(dir)/a"), file: "a") == a)
        }
    }

    func expectDataError(_ text: String, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
        do {
            try body()
            Issue.record("expected a DataError containing '\(text)'", sourceLocation: sourceLocation)
        } catch let e as DataError {
            #expect(e.description.contains(text), "\(e)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("unexpected \(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func badIDXBytesAreNamed() {
        let good = IDXArray(dimensions: [2, 3], bytes: [1, 2, 3, 4, 5, 6]).encoded()
        expectDataError("not an IDX file") { _ = try IDXArray.parse([1] + good.dropFirst(), file: "f") }
        expectDataError("element type 0x0d") { var b = good; b[2] = 0x0D; _ = try IDXArray.parse(b, file: "f") }
        expectDataError("truncated: dimensions [2, 3] need 6 bytes of data, found 5") { _ = try IDXArray.parse(Array(good.dropLast()), file: "f") }
        expectDataError("1 bytes of trailing data") { _ = try IDXArray.parse(good + [0], file: "f") }
        expectDataError("truncated IDX header") { _ = try IDXArray.parse(Array(good.prefix(6)), file: "f") }
        expectDataError("too short") { _ = try IDXArray.parse([0, 0], file: "f") }
    }

    @Test func badDataFilesAreNamedWithARemedy() throws {
        try withTemporaryDirectory { dir in
            let missing = DataConfig(kind: .fashionMNIST, directory: "\(dir)/nowhere")
            expectDataError("deploy/setup.sh") { _ = try missing.load(.train) }
            expectDataError("nowhere/train-images-idx3-ubyte") { _ = try missing.load(.train) }
            expectDataError("cifar.html") { _ = try DataConfig(kind: .cifar10, directory: dir).load(.test) }

            // A truncated gzip stream.
            try writeSyntheticIDX(dir: dir, train: 20, test: 10)
            let path = "\(dir)/train-images-idx3-ubyte.gz"
            let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
            try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: path))
            expectDataError("train-images-idx3-ubyte.gz") { _ = try DataConfig(kind: .mnist, directory: dir).load(.train) }

            // Labels that disagree with the images, and labels out of range.
            try Gzip.write("\(dir)/t10k-labels-idx1-ubyte.gz", IDXArray(dimensions: [9], bytes: [UInt8](repeating: 1, count: 9)).encoded())
            expectDataError("9 labels for 10 images") { _ = try DataConfig(kind: .mnist, directory: dir).load(.test) }
            try Gzip.write("\(dir)/t10k-labels-idx1-ubyte.gz", IDXArray(dimensions: [10], bytes: [0, 1, 2, 3, 4, 5, 6, 7, 8, 10]).encoded())
            expectDataError("label 10 at index 9") { _ = try DataConfig(kind: .mnist, directory: dir).load(.test) }
        }
    }

    @Test func syntheticIDXLoadsWithLimits() throws {
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 50, test: 20)
            let d = try DataConfig(kind: .mnist, directory: dir, trainLimit: 30).load(.train)
            #expect(d.count == 30 && d.height == 28 && d.width == 28 && d.channels == 1)
            #expect(d.pixels.count == 30 * 784)
            #expect(try DataConfig(kind: .mnist, directory: dir).load(.test).count == 20)
        }
    }

    @Test func cifarRecordsParseAndBadSizesAreNamed() throws {
        try withTemporaryDirectory { dir in
            var bytes: [UInt8] = []
            for r in 0 ..< 3 {
                bytes.append(UInt8(r * 3))
                bytes += (0 ..< 3072).map { UInt8(($0 + r) % 256) }
            }
            try Data(bytes).write(to: URL(fileURLWithPath: "\(dir)/test_batch.bin"))
            let d = try DataConfig(kind: .cifar10, directory: dir).load(.test)
            #expect(d.count == 3 && d.channels == 3 && d.labels == [0, 3, 6])
            #expect(d.pixels[3072 + 5] == 6)  // record 1, byte 5 → (5 + 1)
            try Data(bytes.dropLast()).write(to: URL(fileURLWithPath: "\(dir)/test_batch.bin"))
            expectDataError("not a whole number of CIFAR-10 records") { _ = try DataConfig(kind: .cifar10, directory: dir).load(.test) }
            bytes[0] = 12
            try Data(bytes).write(to: URL(fileURLWithPath: "\(dir)/test_batch.bin"))
            expectDataError("record 0 has label 12") { _ = try DataConfig(kind: .cifar10, directory: dir).load(.test) }
        }
    }

    /// The cifar10-tiny preset runs as shipped (RGB 32×32, 65 tokens, crop and flip) on
    /// CIFAR-10 binary batches: here synthetic ones in the real layout, a few steps.
    @Test func theCifarPresetTrainsOnBinaryBatches() throws {
        try withTemporaryDirectory { dir in
            func batch(_ name: String, records: Int) throws {
                var bytes: [UInt8] = []
                var s: UInt64 = 99
                for r in 0 ..< records {
                    bytes.append(UInt8(r % 10))
                    for _ in 0 ..< 3072 { s = s &* 6364136223846793005 &+ 1; bytes.append(UInt8(truncatingIfNeeded: s >> 56)) }
                }
                try Data(bytes).write(to: URL(fileURLWithPath: "\(dir)/\(name)"))
            }
            for k in 1 ... 5 { try batch("data_batch_\(k).bin", records: 20) }
            try batch("test_batch.bin", records: 20)
            let config = try RunConfig.resolve("cifar10-tiny", overrides: ["data.dir=\(dir)", "training.epochs=0", "training.max_steps=3",
                                                                          "training.batch_size=8", "training.precision=fp32"])
            #expect(config.model.numPatches == 64 && config.model.inChannels == 3 && config.data.kind == .cifar10)
            let summary = try Trainer(config: config, options: Trainer.Options(runDirectory: "\(dir)/run"), logger: Logger(label: "test")).run()
            #expect(summary.steps == 3 && (summary.lastEval?.loss.isFinite ?? false))
        }
    }

    @Test func fashionMNISTFromTheDebianPackage() throws {
        let c = DataConfig()
        guard FileManager.default.fileExists(atPath: "\(c.directory)/t10k-images-idx3-ubyte.gz") else {
            Issue.record("Fashion-MNIST is not installed: run deploy/setup.sh")
            return
        }
        let test = try c.load(.test)
        #expect(test.count == 10_000 && test.height == 28 && test.classes == 10)
        #expect(test.classCounts == [Int](repeating: 1000, count: 10))
    }

    @Test func epochPermutationsAreSeededPermutations() {
        let plan = EpochPlan(datasetSize: 103, batchSize: 10, seed: 9)
        let p0 = plan.permutation(epoch: 0), p1 = plan.permutation(epoch: 1)
        #expect(Set(p0).count == 103 && p0.allSatisfy { $0 >= 0 && $0 < 103 })
        #expect(p0 != p1)
        #expect(p0 == plan.permutation(epoch: 0))
        #expect(p0 != EpochPlan(datasetSize: 103, batchSize: 10, seed: 10).permutation(epoch: 0))
        #expect(plan.stepsPerEpoch == 11 && plan.positions(step: 10) == 100 ..< 103)
    }

    @Test(arguments: [[10], [5, 5], [4, 3, 3], [1, 2, 3, 4], [7, 0, 3]])
    func shardsPartitionEveryEpochExactly(shares: [Int]) {
        let plan = EpochPlan(datasetSize: 103, batchSize: shares.reduce(0, +), seed: 3)
        for epoch in 0 ..< 3 {
            var seen: [Int32] = []
            for step in 0 ..< plan.stepsPerEpoch {
                var stepTotal = 0
                for rank in shares.indices {
                    let part = plan.indices(epoch: epoch, step: step, rank: rank, shares: shares)
                    if step < plan.stepsPerEpoch - 1 { #expect(part.count == shares[rank]) }
                    stepTotal += part.count
                    seen += part
                }
                #expect(stepTotal == plan.positions(step: step).count)
            }
            #expect(seen.count == 103 && Set(seen).count == 103, "epoch \(epoch), shares \(shares)")
        }
    }

    func dataset(_ pixels: [UInt8], count: Int, side: Int) -> ImageDataset {
        ImageDataset(name: "t", count: count, channels: 1, height: side, width: side, classes: 10,
                     pixels: pixels, labels: (0 ..< count).map { Int32($0 % 10) })
    }

    @Test func normalisationWithoutAugmentation() {
        let d = dataset([0, 51, 102, 255], count: 1, side: 2)
        let a = BatchAssembler(dataset: d, mean: [0.2], std: [0.5], augmentation: .none, seed: 0)
        var img = [Float](repeating: 0, count: 4), lab: [Int32] = [9]
        a.fill(images: &img, labels: &lab, indices: [0], epoch: 0, augment: true)
        let want: [Float] = [(0 - 0.2) / 0.5, (0.2 - 0.2) / 0.5, (0.4 - 0.2) / 0.5, (1 - 0.2) / 0.5]
        for i in 0 ..< 4 { #expect(abs(img[i] - want[i]) < 1e-6) }
        #expect(lab == [0])
    }

    /// Every augmented image is the source shifted by some (dy, dx) within the padding,
    /// possibly mirrored, with the zero pixel outside; and it depends only on
    /// (seed, epoch, image), not on the batch it is in.
    @Test func cropAndFlipAreShiftsOfTheSourceAndDeterministic() {
        let side = 6, count = 40, pad = 2
        var rng = SplitMix(1)
        let pixels = (0 ..< count * side * side).map { _ in UInt8(1 + rng.next() % 255) }
        let d = dataset(pixels, count: count, side: side)
        let a = BatchAssembler(dataset: d, mean: [0], std: [1], augmentation: .init(cropPadding: pad, horizontalFlip: true), seed: 4)
        var out = [Float](repeating: 0, count: count * side * side), lab = [Int32](repeating: 0, count: count)
        a.fill(images: &out, labels: &lab, indices: (0 ..< Int32(count)).map { $0 }, epoch: 2, augment: true)
        var mirrored = 0, shifted = 0
        for i in 0 ..< count {
            var matches: [(Int, Int, Bool)] = []
            for dy in -pad ... pad { for dx in -pad ... pad { for m in [false, true] {
                var ok = true
                for y in 0 ..< side where ok { for x in 0 ..< side {
                    let sy = y + dy, sx = (m ? side - 1 - x : x) + dx
                    let v: Float = sy >= 0 && sy < side && sx >= 0 && sx < side ? Float(pixels[i * 36 + sy * side + sx]) / 255 : 0
                    if abs(out[i * 36 + y * side + x] - v) > 1e-6 { ok = false; break }
                } }
                if ok { matches.append((dy, dx, m)) }
            } } }
            #expect(matches.count == 1, "image \(i): \(matches)")
            if let m = matches.first { if m.2 { mirrored += 1 }; if m.0 != 0 || m.1 != 0 { shifted += 1 } }
        }
        #expect(mirrored > 5 && mirrored < 35 && shifted > 20, "mirrored \(mirrored), shifted \(shifted)")
        // The same image in another batch, another position: identical.
        var single = [Float](repeating: 0, count: 36), l1: [Int32] = [0]
        a.fill(images: &single, labels: &l1, indices: [17], epoch: 2, augment: true)
        #expect(Array(out[17 * 36 ..< 18 * 36]) == single)
        // Another epoch draws again.
        var other = [Float](repeating: 0, count: count * 36)
        a.fill(images: &other, labels: &lab, indices: (0 ..< Int32(count)).map { $0 }, epoch: 3, augment: true)
        #expect(other != out)
        // augment: false leaves the image alone.
        a.fill(images: &single, labels: &l1, indices: [17], epoch: 2, augment: false)
        let plain = pixels[17 * 36 ..< 18 * 36].map { Float($0) / 255 }
        #expect(zip(single, plain).allSatisfy { abs($0 - $1) < 1e-6 })
    }
}
