import Config
import Core
import Datasets
import Foundation
import Images
import Logging
import TestSupport
import Testing
@testable import Training

@Suite("image folders")
struct ImageFolderTests {
    let log = Logger(label: "test")

    func randomBytes(_ n: Int, seed: UInt64) -> [UInt8] {
        var rng = Xoshiro256(seed: seed)
        return (0 ..< n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
    }

    func crop(_ src: [UInt8], _ layout: PixelLayout, _ region: PixelRegion, _ w: Int, _ h: Int, mirror: Bool = false) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: layout.channels * w * h)
        src.withUnsafeBufferPointer { s in
            out.withUnsafeMutableBufferPointer { o in
                Resample.crop(s.baseAddress!, layout, region: region, outWidth: w, outHeight: h, mirror: mirror, into: o.baseAddress!)
            }
        }
        return out
    }

    /// The separable passes against the direct double sum, over shrinking, enlarging,
    /// fractional and out-of-place regions, planar and interleaved, mirrored or not.
    @Test func resamplingMatchesTheDirectSum() {
        let w = 23, h = 17
        let planar = PixelLayout.planar(channels: 2, height: h, width: w)
        let interleaved = PixelLayout.interleaved(channels: 3, height: h, width: w)
        let regions = [PixelRegion(x: 0, y: 0, width: 23, height: 17), PixelRegion(x: 2.5, y: 1.25, width: 15.5, height: 11),
                       PixelRegion(x: 4, y: 3, width: 5, height: 4), PixelRegion(x: 0, y: 0, width: 23, height: 3)]
        for (layout, seed) in [(planar, UInt64(1)), (interleaved, 2)] {
            let src = randomBytes(layout.channels * w * h, seed: seed)
            for r in regions {
                for (ow, oh) in [(7, 5), (23, 17), (40, 31)] {
                    for mirror in [false, true] {
                        let fast = crop(src, layout, r, ow, oh, mirror: mirror)
                        let slow = Resample.referenceCrop(src, layout, region: r, outWidth: ow, outHeight: oh, mirror: mirror)
                        // Float against double may round a .5 the other way, nothing more.
                        let worst = zip(fast, slow).map { abs(Int($0) - Int($1)) }.max() ?? 0
                        #expect(worst <= 1, "\(r) → \(ow)×\(oh) mirror \(mirror): off by \(worst)")
                    }
                }
            }
        }
    }

    /// What the filter is, in numbers: the whole picture at its own size is itself; a flat
    /// picture stays flat at any size; halving averages with Pillow's weights 1/8, 3/8,
    /// 3/8, 1/8; enlarging a ramp keeps it a ramp away from the edges; mirroring reverses.
    @Test func resamplingDoesWhatPillowDoes() {
        let w = 16, h = 4
        let ramp = (0 ..< h).flatMap { _ in (0 ..< w).map { UInt8($0 * 16) } }
        let layout = PixelLayout.planar(channels: 1, height: h, width: w)
        let whole = PixelRegion(x: 0, y: 0, width: Double(w), height: Double(h))
        #expect(crop(ramp, layout, whole, w, h) == ramp)
        #expect(crop(ramp, layout, whole, w, h, mirror: true) == (0 ..< h).flatMap { _ in (0 ..< w).reversed().map { UInt8($0 * 16) } })
        let flat = [UInt8](repeating: 77, count: w * h)
        #expect(crop(flat, layout, PixelRegion(x: 1.3, y: 0.2, width: 9.1, height: 2.7), 5, 9).allSatisfy { $0 == 77 })
        // Halving: output x reads inputs 2x-1 … 2x+2 with weights 1, 3, 3, 1 (/8).
        let half = crop(ramp, layout, whole, w / 2, h)
        for x in 1 ..< w / 2 - 1 {
            let v = (1 * Double(16 * (2 * x - 1)) + 3 * Double(16 * 2 * x) + 3 * Double(16 * (2 * x + 1)) + 1 * Double(16 * (2 * x + 2))) / 8
            #expect(half[x] == UInt8((v + 0.5).rounded(.down)), "x \(x)")
        }
        // Doubling a ramp of step 16: interior steps of 8.
        let double = crop(ramp, layout, whole, 2 * w, h)
        for x in 2 ..< 2 * w - 3 { #expect(Int(double[x + 1]) - Int(double[x]) == 8, "x \(x): \(double[x]) → \(double[x + 1])") }
    }

    @Test func cropRegionsAreTorchvisionsAndTimms() {
        var rng = Xoshiro256(seed: 3)
        var fallback = 0
        for i in 0 ..< 500 {
            let w = 30 + i % 70, h = 20 + (i * 7) % 90
            let r = CropRegion.randomResized(width: w, height: h, scale: 0.08 ... 1, ratio: 0.75 ... 4.0 / 3, rng: &rng)
            #expect(r.x >= 0 && r.y >= 0 && r.x + r.width <= Double(w) && r.y + r.height <= Double(h), "\(r) of \(w)×\(h)")
            #expect(r.x == r.x.rounded() && r.width == r.width.rounded(), "whole pixels")
            let area = r.width * r.height / Double(w * h)
            // Rounding to whole pixels moves the area and ratio a little from what was drawn.
            if area < 0.07 || r.width / r.height < 0.7 || r.width / r.height > 1.42 { fallback += 1 }
        }
        #expect(fallback < 25, "\(fallback) of 500 outside scale and ratio")
        var a = Xoshiro256(seed: 9), b = Xoshiro256(seed: 9)
        #expect(CropRegion.randomResized(width: 64, height: 48, scale: 0.08 ... 1, ratio: 0.75 ... 1.33, rng: &a)
                == CropRegion.randomResized(width: 64, height: 48, scale: 0.08 ... 1, ratio: 0.75 ... 1.33, rng: &b))
        // timm at 32 px with crop_pct 0.875: the shorter side to ⌊32 / 0.875⌋ = 36, the centre 32.
        let c = CropRegion.center(width: 100, height: 50, size: 32, cropFraction: 0.875)
        #expect(abs(c.width - 32 * 50 / 36.0) < 1e-9 && c.width == c.height)
        #expect(abs(c.x - (100 - c.width) / 2) < 1e-9 && abs(c.y - (50 - c.height) / 2) < 1e-9)
    }

    @Test func theNextShareIsThePlansNextBatch() {
        let plan = EpochPlan(datasetSize: 25, batchSize: 10, seed: 1)
        #expect(plan.nextPositions(after: 3 ..< 7, epoch: 0) == (0, 13 ..< 17))
        #expect(plan.nextPositions(after: 13 ..< 20, epoch: 4) == (4, 23 ..< 25))
        #expect(plan.nextPositions(after: 20 ..< 25, epoch: 2) == (3, 0 ..< 5))
        #expect(plan.nextPositions(after: 17 ..< 20, epoch: 0) == (0, 25 ..< 25))
    }

    func folderConfig(_ dir: String, _ extra: [String] = []) throws -> RunConfig {
        let yaml = """
        name: folder
        model: {image_size: 32, patch_size: 8, in_channels: 3, num_classes: 4, dim: 32, depth: 2, heads: 2, mlp_ratio: 2}
        data: {dataset: image-folder, dir: \(dir), augmentation: {random_resized_crop: true, crop_scale: [0.5, 1.0], horizontal_flip: true}}
        optimizer: {name: adamw, lr: 3.0e-3, weight_decay: 0.05}
        schedule: {warmup_steps: 3}
        training: {epochs: 3, batch_size: 16, label_smoothing: 0.1, seed: 5, log_every_steps: 1, threads: 2, eval_batch_size: 32}
        """
        return try RunConfig.parse(yaml: yaml, file: "folder.yaml", overrides: extra)
    }

    func expectError(_ text: String, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
        do {
            try body()
            Issue.record("expected an error containing '\(text)'", sourceLocation: sourceLocation)
        } catch {
            #expect("\(error)".contains(text), "\(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func aFolderOfClassFoldersLoadsAndBadFoldersAreNamed() throws {
        try withTemporaryDirectory { dir in
            #expect(try ImageFolderMaker.make(root: dir, perClass: 6, valPerClass: 2) == 32)
            try Data("not a picture".utf8).write(to: URL(fileURLWithPath: "\(dir)/train/apple/README.txt"))
            let config = try folderConfig(dir)
            try config.checkData()
            let train = try config.loadData(.train), val = try config.loadData(.test)
            #expect(train.count == 24 && val.count == 8)
            #expect(train.classNames == ImageFolderMaker.classNames && train.classes == 4)
            #expect(train.labels == (0 ..< 4).flatMap { k in [Int32](repeating: Int32(k), count: 6) })
            #expect(train.files?.paths.first == "train/apple/0000.jpg" && train.channels == 3 && train.height == 32)
            // A limit keeps every class.
            #expect(Set(try folderConfig(dir, ["data.train_limit=8"]).loadData(.train).labels) == [0, 1, 2, 3])

            expectError("model.num_classes") { _ = try folderConfig(dir, ["model.num_classes=10"]).loadData(.train) }
            expectError("data.mean") { try folderConfig(dir, ["model.in_channels=1"]).checkData() }
            try folderConfig(dir, ["model.in_channels=1", "data.mean=[0.5]", "data.std=[0.25]"]).checkData()
            expectError("random_resized_crop, which is not on") { _ = try folderConfig(dir, ["data.augmentation={crop_scale: [0.2, 1]}"]) }
            expectError("crop_scale") { _ = try folderConfig(dir, ["data.augmentation={random_resized_crop: true, crop_scale: [0.2, 2]}"]) }
            expectError("choose one") { _ = try folderConfig(dir, ["data.augmentation={random_resized_crop: true, random_crop_padding: 4}"]) }
            expectError("crop_pct") { _ = try folderConfig(dir, ["data.crop_pct=1.5"]) }
            // The effective config parses back to itself.
            #expect(try RunConfig.parse(yaml: config.yaml, file: config.source) == config)

            try FileManager.default.createDirectory(atPath: "\(dir)/val/elderberry", withIntermediateDirectories: true)
            expectError("val/elderberry: is a class the training split does not have") { _ = try config.loadData(.test) }
            try FileManager.default.createDirectory(atPath: "\(dir)/train/elderberry", withIntermediateDirectories: true)
            expectError("train/elderberry: holds no .jpg, .jpeg or .png file") { _ = try config.loadData(.train) }
            try FileManager.default.removeItem(atPath: "\(dir)/train")
            expectError("holds train/ and val/") { _ = try config.loadData(.train) }
        }
    }

    func fill(_ a: BatchAssembler, _ indices: [Int32], epoch: Int, augment: Bool) -> ([Float], [Int32]) {
        var images = [Float](repeating: .nan, count: indices.count * a.dataset.imageBytes)
        var labels = [Int32](repeating: -1, count: indices.count)
        images.withUnsafeMutableBufferPointer { i in
            labels.withUnsafeMutableBufferPointer { l in
                a.fill(images: i.baseAddress!, labels: l.baseAddress!, indices: indices, epoch: epoch, augment: augment)
            }
        }
        return (images, labels)
    }

    /// A batch is a function of (seed, epoch, image): the same from a fresh loader, from
    /// one that prefetched it, and from one decoding on several threads; another epoch
    /// crops differently, evaluation does not change with the epoch. Grey models get
    /// Pillow's luma.
    @Test func folderBatchesAreDeterministicAndPrefetchingChangesNothing() throws {
        try withTemporaryDirectory { dir in
            try ImageFolderMaker.make(root: dir, perClass: 8, valPerClass: 2)
            let c = try folderConfig(dir)
            let train = try c.loadData(.train)
            func assembler(seed: UInt64 = 5) -> BatchAssembler {
                BatchAssembler(dataset: train, mean: c.data.mean, std: c.data.std, augmentation: c.data.augmentation, seed: seed)
            }
            let batch: [Int32] = [3, 17, 0, 25, 9, 31, 12, 20]
            let plain = fill(assembler(), batch, epoch: 1, augment: true)
            #expect(plain.0.allSatisfy(\.isFinite) && plain.1 == batch.map { train.labels[Int($0)] })

            let ahead = assembler()
            ahead.prefetch(indices: batch, epoch: 1, augment: true)
            let loader = try #require(ahead.loader)
            let deadline = Date().addingTimeInterval(20)
            while loader.prefetched < batch.count && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
            let prefetched = fill(ahead, batch, epoch: 1, augment: true)
            #expect(prefetched.0 == plain.0 && prefetched.1 == plain.1)
            #expect(loader.hits == batch.count && loader.misses == 0, "hits \(loader.hits), misses \(loader.misses)")

            let parallel = assembler()
            parallel.loader?.threads = 4
            #expect(fill(parallel, batch, epoch: 1, augment: true).0 == plain.0)
            #expect(fill(assembler(), batch, epoch: 2, augment: true).0 != plain.0)
            #expect(fill(assembler(seed: 6), batch, epoch: 1, augment: true).0 != plain.0)
            let evalA = fill(assembler(), batch, epoch: 1, augment: false), evalB = fill(assembler(), batch, epoch: 7, augment: false)
            #expect(evalA.0 == evalB.0 && evalA.0 != plain.0)

            // A class's colour cast survives: apple pictures are red-heavy, banana green-heavy.
            let raw = assembler().bytes(of: 0), mean = { (ch: Int) in raw[ch * 1024 ..< (ch + 1) * 1024].reduce(0) { $0 + Int($1) } / 1024 }
            #expect(mean(0) > mean(1) + 30 && mean(0) > mean(2) + 30, "apple's channel means \(mean(0)) \(mean(1)) \(mean(2))")

            let grey = try folderConfig(dir, ["model.in_channels=1", "data.mean=[0.5]", "data.std=[0.25]"]).loadData(.train)
            let g = BatchAssembler(dataset: grey, mean: [0.5], std: [0.25], augmentation: .none, seed: 5).bytes(of: 0)
            #expect(g.count == 1024)
            let luma: [Int] = (0 ..< 1024).map { i in
                let r = Int(raw[i]) * 299, gr = Int(raw[1024 + i]) * 587, b = Int(raw[2048 + i]) * 114
                return (r + gr + b + 500) / 1000
            }
            // Luma then resize against resize then luma: rounding apart, the same picture.
            #expect(zip(g, luma).map { abs(Int($0) - $1) }.max()! <= 2)
        }
    }

    /// The loader under guesses right, half right and wrong, taken at once or a little
    /// later, with repeated keys: every picture it hands over is the one `make` makes, and
    /// nothing is lost or waits forever.
    @Test func prefetchGuessesRightOrWrongGiveTheSamePictures() throws {
        try withTemporaryDirectory { dir in
            try ImageFolderMaker.make(root: dir, perClass: 6, valPerClass: 1)
            let c = try folderConfig(dir)
            let train = try c.loadData(.train)
            let loader = FolderImageLoader(files: train.files!, augmentation: c.data.augmentation, seed: 5)
            loader.threads = 2
            var rng = Xoshiro256(seed: 17)
            func keys(_ n: Int) -> [FolderImageLoader.Key] {
                (0 ..< n).map { _ in .init(index: Int32(rng.next() % 24), epoch: Int(rng.next() % 2), augment: rng.next() & 1 == 0) }
            }
            var next = keys(6)
            for round in 0 ..< 40 {
                loader.prefetch(next)
                if round % 3 == 1 { Thread.sleep(forTimeInterval: 0.002) }
                // Right (the prefetched keys), half right, or wrong; some twice.
                let wanted = round % 3 == 0 ? next : round % 3 == 1 ? Array(next.prefix(3)) + keys(3) : keys(5)
                let batch = wanted + wanted.prefix(2)
                let got = loader.take(batch)
                #expect(got.count == batch.count)
                for (k, image) in zip(batch, got) { #expect(image == loader.make(k), "round \(round), \(k)") }
                next = keys(6)
            }
            #expect(loader.hits > 0 && loader.misses > 0 && loader.prefetched > 0)
        }
    }

    /// A file that is not a picture is said once, by name, and trained on as grey; the
    /// batch is made and the rest of it is untouched.
    @Test func aBrokenPictureIsNamedAndDoesNotStopTheBatch() throws {
        try withTemporaryDirectory { dir in
            try ImageFolderMaker.make(root: dir, perClass: 3, valPerClass: 1)
            let c = try folderConfig(dir)
            let good = try c.loadData(.train)
            let before = BatchAssembler(dataset: good, mean: c.data.mean, std: c.data.std, augmentation: .none, seed: 5).bytes(of: 4)
            try Data([0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3]).write(to: URL(fileURLWithPath: "\(dir)/train/apple/0002.jpg"))
            let a = BatchAssembler(dataset: try c.loadData(.train), mean: c.data.mean, std: c.data.std, augmentation: c.data.augmentation, seed: 5)
            let (images, labels) = fill(a, [2, 4], epoch: 0, augment: false)
            #expect(labels == [0, 1] && images.allSatisfy(\.isFinite))
            #expect(a.loader?.unreadable == ["\(dir)/train/apple/0002.jpg"])
            #expect(a.bytes(of: 2).allSatisfy { $0 == 128 })
            #expect(a.bytes(of: 4) == before)
        }
    }

    /// A few hundred JPEG and PNG files of four classes: three short epochs with
    /// RandomResizedCrop and flips, the loss falls and the model beats chance by far.
    @Test func aSmallViTLearnsFromAnImageFolder() throws {
        try withTemporaryDirectory { dir in
            #expect(try ImageFolderMaker.make(root: "\(dir)/images", perClass: 60, valPerClass: 15) == 300)
            let config = try folderConfig("\(dir)/images")
            let trainer = try Trainer(config: config, options: Trainer.Options(runDirectory: "\(dir)/run"), logger: log)
            var losses: [Double] = []
            let summary = try trainer.run { event in
                if case .step(let r) = event { losses.append(r.loss) }
            }
            #expect(summary.steps == 45 && losses.count >= 40)
            let first = losses.prefix(5).reduce(0, +) / 5, last = losses.suffix(5).reduce(0, +) / 5
            #expect(last < first - 0.3, "loss \(first) → \(last)")
            #expect((summary.lastEval?.accuracy ?? 0) > 0.6, "\(String(describing: summary.lastEval))")
        }
    }

    func memorySet(count: Int = 40, side: Int = 12) -> ImageDataset {
        var rng = Xoshiro256(seed: 21)
        let px = (0 ..< count * 3 * side * side).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        return ImageDataset(name: "m", count: count, channels: 3, height: side, width: side, classes: 10,
                            pixels: px, labels: (0 ..< count).map { Int32($0 % 10) })
    }

    func mixed(_ a: BatchAssembler, _ indices: [Int32], epoch: Int) -> (images: [Float], labels: [Int32], second: [Int32], weights: [Float]) {
        let n = a.dataset.imageBytes
        var images = [Float](repeating: .nan, count: indices.count * n)
        var labels = [Int32](repeating: -1, count: indices.count), second = labels
        var weights = [Float](repeating: .nan, count: indices.count)
        images.withUnsafeMutableBufferPointer { i in
            labels.withUnsafeMutableBufferPointer { l in
                second.withUnsafeMutableBufferPointer { s in
                    weights.withUnsafeMutableBufferPointer { w in
                        a.fill(images: i.baseAddress!, labels: l.baseAddress!, indices: indices, epoch: epoch, augment: true,
                               mix: (s.baseAddress!, w.baseAddress!))
                    }
                }
            }
        }
        return (images, labels, second, weights)
    }

    /// What Mixup and CutMix do to a batch: each image's partner, λ and box are a function
    /// of (seed, epoch, image) whatever batch it is in; Mixup is λ·own + (1 − λ)·partner,
    /// CutMix pastes the partner's box and λ is the uncovered share; the second label is
    /// the partner's; Beta(1, 1) draws average ½; mix_prob 0 mixes nothing.
    @Test func mixupAndCutMixMixWhatTheySay() throws {
        let set = memorySet()
        let n = set.imageBytes, side = set.height
        var aug = DataConfig.Augmentation(cropPadding: 0, horizontalFlip: true)
        aug.mixup = 1; aug.cutmix = 1; aug.mixSwitchProbability = 0.5
        let a = BatchAssembler(dataset: set, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25], augmentation: aug, seed: 3)
        let one = mixed(a, [5, 17, 30], epoch: 2), other = mixed(a, [30, 5], epoch: 2)
        #expect(Array(one.images[0 ..< n]) == Array(other.images[n ..< 2 * n]))
        #expect(Array(one.images[2 * n ..< 3 * n]) == Array(other.images[0 ..< n]))
        #expect(one.second[0] == other.second[1] && one.weights[2] == other.weights[0])
        #expect(mixed(a, [5, 17, 30], epoch: 3).images != one.images)

        var lambdas: [Double] = [], cuts = 0
        for i in 0 ..< 40 {
            let idx = Int32(i)
            let plan = try #require(a.mixPlan(image: idx, epoch: 1))
            let m = mixed(a, [idx], epoch: 1)
            // The unmixed own and partner images, as fill makes them without mixing.
            let own = fill(a, [idx], epoch: 1, augment: true).0, partner = fill(a, [plan.partner], epoch: 1, augment: true).0
            #expect(m.labels == [set.labels[i]] && m.second == [set.labels[Int(plan.partner)]] && m.weights == [plan.weight])
            if let box = plan.box {
                cuts += 1
                let area = (box.y1 - box.y0) * (box.x1 - box.x0)
                #expect(plan.weight == Float(1 - Double(area) / Double(side * side)))
                for c in 0 ..< 3 {
                    for y in 0 ..< side {
                        for x in 0 ..< side {
                            let k = c * side * side + y * side + x
                            let inside = y >= box.y0 && y < box.y1 && x >= box.x0 && x < box.x1
                            #expect(m.images[k] == (inside ? partner[k] : own[k]))
                        }
                    }
                }
            } else {
                lambdas.append(Double(plan.weight))
                let l = plan.weight
                #expect(zip(m.images, zip(own, partner)).allSatisfy { $0 == l * $1.0 + (1 - l) * $1.1 })
            }
        }
        #expect(cuts > 8 && cuts < 32, "\(cuts) of 40 took CutMix at switch probability 0.5")
        var rng = Xoshiro256(seed: 1)
        let draws = (0 ..< 4000).map { _ in rng.nextBeta(1) }
        let mean = draws.reduce(0, +) / 4000
        #expect(abs(mean - 0.5) < 0.02 && draws.allSatisfy { $0 >= 0 && $0 <= 1 }, "Beta(1, 1) mean \(mean)")
        let small = (0 ..< 4000).map { _ in rng.nextBeta(0.2) }
        // Beta(0.2, 0.2) piles up at the ends: most draws below 0.1 or above 0.9.
        #expect(small.filter { $0 < 0.1 || $0 > 0.9 }.count > 2400)

        var never = aug
        never.mixProbability = 0
        let b = BatchAssembler(dataset: set, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25], augmentation: never, seed: 3)
        let plainBatch = mixed(b, [1, 2], epoch: 0)
        #expect(plainBatch.weights == [1, 1] && plainBatch.second == plainBatch.labels)
        #expect(plainBatch.images == fill(b, [1, 2], epoch: 0, augment: true).0)
        // Evaluation never mixes.
        #expect(a.mixPlan(image: 0, epoch: 0) != nil)
        let eval = fill(a, [0], epoch: 0, augment: false).0
        var w: [Float] = [0], l2: [Int32] = [0], l: [Int32] = [0]
        var img = [Float](repeating: 0, count: n)
        img.withUnsafeMutableBufferPointer { i in l.withUnsafeMutableBufferPointer { lp in l2.withUnsafeMutableBufferPointer { s in w.withUnsafeMutableBufferPointer { wp in
            a.fill(images: i.baseAddress!, labels: lp.baseAddress!, indices: [0], epoch: 0, augment: false, mix: (s.baseAddress!, wp.baseAddress!))
        } } } }
        #expect(img == eval && w == [1])
    }

    /// DeiT's Mixup 0.8 and CutMix 1.0 with TrivialAugment on an image folder: the run
    /// trains (finite, falling loss) and the partners are decoded with the batch.
    @Test func mixingTrainsOnAnImageFolder() throws {
        try withTemporaryDirectory { dir in
            try ImageFolderMaker.make(root: "\(dir)/images", perClass: 20, valPerClass: 5)
            let config = try folderConfig("\(dir)/images", ["data.augmentation={random_resized_crop: true, horizontal_flip: true, trivial_augment: true, mixup: 0.8, cutmix: 1.0}",
                                                               "training.epochs=2"])
            #expect(config.data.augmentation.mixup == 0.8 && config.data.augmentation.cutmix == 1 && config.data.augmentation.trivialAugment)
            #expect(try RunConfig.parse(yaml: config.yaml, file: config.source) == config)
            let trainer = try Trainer(config: config, options: Trainer.Options(runDirectory: "\(dir)/run"), logger: log)
            var losses: [Double] = []
            let summary = try trainer.run { event in if case .step(let r) = event { losses.append(r.loss) } }
            #expect(summary.steps == 10 && losses.allSatisfy(\.isFinite))
            #expect(losses.suffix(3).reduce(0, +) < losses.prefix(3).reduce(0, +), "\(losses)")
        }
    }
}
