import Core
import Kernels

/// Turns image indices into a normalised float batch (B, C, H, W) and labels, applying
/// the configured augmentation. Each image's crop offset and flip come from its own
/// stream seeded by (seed, epoch, image index), so a batch is the same whoever builds it.
/// An image folder's pictures are decoded by `loader`, ahead of time when told what
/// comes next (`prefetch`).
public struct BatchAssembler: Sendable {
    public let dataset: ImageDataset
    public let augmentation: DataConfig.Augmentation
    public let seed: UInt64
    /// (pixel/255 − mean)/std for each channel and byte value: 256·C floats.
    let table: [Float]
    /// An image folder's decoder and prefetch queue (nil: pixels in memory).
    public let loader: FolderImageLoader?

    /// Whether `prefetch` starts anything (image folders).
    public let prefetches: Bool

    public init(dataset: ImageDataset, mean: [Double], std: [Double],
                augmentation: DataConfig.Augmentation, seed: UInt64, prefetch: Bool = true) {
        prefetches = prefetch
        precondition(mean.count == dataset.channels && std.count == dataset.channels, "BatchAssembler: mean/std per channel")
        self.dataset = dataset
        self.augmentation = augmentation
        self.seed = seed
        var t = [Float](repeating: 0, count: 256 * dataset.channels)
        for c in 0 ..< dataset.channels {
            for v in 0 ..< 256 { t[c * 256 + v] = Float((Double(v) / 255 - mean[c]) / std[c]) }
        }
        table = t
        loader = dataset.files.map { FolderImageLoader(files: $0, augmentation: augmentation, seed: seed) }
    }

    /// Starts decoding what the next `fill` will ask for (image folders; nothing for data
    /// in memory).
    public func prefetch(indices: [Int32], epoch: Int, augment: Bool) {
        guard prefetches else { return }
        let all = augment ? indices + partners(of: indices, epoch: epoch) : indices
        loader?.prefetch(all.map { key($0, epoch: epoch, augment: augment) })
    }

    /// The loader's name for an image: evaluation's pictures do not change with the epoch.
    func key(_ index: Int32, epoch: Int, augment: Bool) -> FolderImageLoader.Key {
        FolderImageLoader.Key(index: index, epoch: augment ? epoch : 0, augment: augment)
    }

    /// One image's (C, H, W) bytes to normalised floats through the per-channel table.
    func normalise(_ src: UnsafePointer<UInt8>, into dst: UnsafeMutablePointer<Float>, lut: UnsafePointer<Float>) {
        let plane = dataset.height * dataset.width
        for ch in 0 ..< dataset.channels {
            let t = lut + ch * 256, s = src + ch * plane, o = dst + ch * plane
            for k in 0 ..< plane { o[k] = t[Int(s[k])] }
        }
    }

    /// One image as the model sees it before normalisation, (C, H, W) bytes, unaugmented
    /// (pictures of what a model saw).
    public func bytes(of index: Int) -> [UInt8] {
        if let loader { return loader.make(.init(index: Int32(index), epoch: 0, augment: false)) }
        let n = dataset.imageBytes
        return Array(dataset.pixels[index * n ..< (index + 1) * n])
    }

    /// Fills images (indices.count, C, H, W) and labels. `augment` false gives the plain
    /// normalised images (evaluation). With Mixup/CutMix configured and `mix` given,
    /// augmented images are mixed with their partners (`mixPlan`) and `mix` receives each
    /// row's second label and the weight of its own (1 for an unmixed image).
    public func fill(images: UnsafeMutablePointer<Float>, labels: UnsafeMutablePointer<Int32>,
                     indices: [Int32], epoch: Int, augment: Bool,
                     mix: (labels: UnsafeMutablePointer<Int32>, weights: UnsafeMutablePointer<Float>)? = nil) {
        fillUnmixed(images: images, labels: labels, indices: indices, epoch: epoch, augment: augment)
        guard let mix else { return }
        let plans: [MixPlan?] = augment && augmentation.mixes ? indices.map { mixPlan(image: $0, epoch: epoch) } : indices.map { _ in nil }
        for (b, plan) in plans.enumerated() {
            mix.labels[b] = plan.map { dataset.labels[Int($0.partner)] } ?? labels[b]
            mix.weights[b] = plan?.weight ?? 1
        }
        let mixed = plans.enumerated().compactMap { b, p in p.map { (b, $0) } }
        guard !mixed.isEmpty else { return }
        // The partners as they would be trained alone (their own crop and flip), at once.
        let n = dataset.imageBytes
        let partners = FloatBuffer(count: mixed.count * n)
        var partnerLabels = [Int32](repeating: 0, count: mixed.count)
        partnerLabels.withUnsafeMutableBufferPointer { pl in
            fillUnmixed(images: partners.pointer, labels: pl.baseAddress!, indices: mixed.map(\.1.partner), epoch: epoch, augment: true)
        }
        let h = dataset.height, w = dataset.width
        for (k, (b, plan)) in mixed.enumerated() {
            let x = images + b * n, y = partners.pointer + k * n
            if let box = plan.box {
                for c in 0 ..< dataset.channels {
                    for r in box.y0 ..< box.y1 {
                        let o = c * h * w + r * w
                        (x + o + box.x0).update(from: y + o + box.x0, count: box.x1 - box.x0)
                    }
                }
            } else {
                let l = plan.weight, m = 1 - plan.weight
                for i in 0 ..< n { x[i] = l * x[i] + m * y[i] }
            }
        }
    }

    /// Mixup or CutMix for one image in one epoch (nil: not mixed), from its own stream as
    /// timm draws per element: mixed with probability mix_prob; CutMix with probability
    /// mix_switch_prob when both are on; λ ~ Beta(α, α); the partner any image of the
    /// split; CutMix's box of side √(1 − λ) about a random centre, clipped, and λ then set
    /// to the share of the image left uncovered (timm's correct_lam).
    public func mixPlan(image: Int32, epoch: Int) -> MixPlan? {
        let a = augmentation
        guard a.mixes else { return nil }
        var rng = Xoshiro256(seed: StreamSeed.mix(seed, StreamSeed.mixing, UInt64(epoch), UInt64(image)))
        guard Double(rng.nextUniform()) < a.mixProbability else { return nil }
        let cut = a.cutmix > 0 && (a.mixup == 0 || Double(rng.nextUniform()) < a.mixSwitchProbability)
        var lambda = rng.nextBeta(cut ? a.cutmix : a.mixup)
        let partner = Int32(rng.next() % UInt64(dataset.count))
        var box: MixPlan.Box? = nil
        if cut {
            let h = dataset.height, w = dataset.width
            let ratio = (1 - lambda).squareRoot()
            let ch = Int(Double(h) * ratio), cw = Int(Double(w) * ratio)
            let cy = Int(rng.next() % UInt64(h)), cx = Int(rng.next() % UInt64(w))
            let b = MixPlan.Box(y0: min(max(cy - ch / 2, 0), h), y1: min(max(cy + ch / 2, 0), h),
                                x0: min(max(cx - cw / 2, 0), w), x1: min(max(cx + cw / 2, 0), w))
            lambda = 1 - Double((b.y1 - b.y0) * (b.x1 - b.x0)) / Double(h * w)
            box = b
        }
        return MixPlan(partner: partner, weight: Float(lambda), box: box)
    }

    /// The images `fill` will mix in, for `prefetch`.
    func partners(of indices: [Int32], epoch: Int) -> [Int32] {
        augmentation.mixes ? indices.compactMap { mixPlan(image: $0, epoch: epoch)?.partner } : []
    }

    func fillUnmixed(images: UnsafeMutablePointer<Float>, labels: UnsafeMutablePointer<Int32>,
                     indices: [Int32], epoch: Int, augment: Bool) {
        let d = dataset
        let c = d.channels, h = d.height, w = d.width, plane = h * w
        if let loader {
            let made = loader.take(indices.map { key($0, epoch: epoch, augment: augment) })
            table.withUnsafeBufferPointer { lut in
                for (b, index) in indices.enumerated() {
                    labels[b] = d.labels[Int(index)]
                    made[b].withUnsafeBufferPointer { normalise($0.baseAddress!, into: images + b * d.imageBytes, lut: lut.baseAddress!) }
                }
            }
            return
        }
        if augment && (augmentation.randomResizedCrop != nil || augmentation.trivialAugment) {
            fillAugmentedBytes(images: images, labels: labels, indices: indices, epoch: epoch)
            return
        }
        let pad = augment ? augmentation.cropPadding : 0
        let flip = augment && augmentation.horizontalFlip
        d.pixels.withUnsafeBufferPointer { px in
            table.withUnsafeBufferPointer { lut in
                let src0 = px.baseAddress!, lut0 = lut.baseAddress!
                for (b, index) in indices.enumerated() {
                    let i = Int(index)
                    labels[b] = d.labels[i]
                    var dy = 0, dx = 0, mirror = false
                    if pad > 0 || flip {
                        var rng = Xoshiro256(seed: StreamSeed.mix(seed, StreamSeed.augmentation, UInt64(epoch), UInt64(i)))
                        if pad > 0 {
                            dy = Int(rng.next() % UInt64(2 * pad + 1)) - pad
                            dx = Int(rng.next() % UInt64(2 * pad + 1)) - pad
                        }
                        if flip { mirror = rng.next() & 1 == 1 }
                    }
                    for ch in 0 ..< c {
                        let src = src0 + i * d.imageBytes + ch * plane
                        let dst = images + b * d.imageBytes + ch * plane
                        let t = lut0 + ch * 256
                        let zero = t[0]
                        if dy == 0 && dx == 0 && !mirror {
                            for k in 0 ..< plane { dst[k] = t[Int(src[k])] }
                            continue
                        }
                        // Output (y, x) reads the padded source at (y + dy, x' + dx), x'
                        // the mirrored column; outside the image is the zero pixel.
                        for y in 0 ..< h {
                            let sy = y + dy
                            let row = dst + y * w
                            guard sy >= 0 && sy < h else {
                                row.update(repeating: zero, count: w)
                                continue
                            }
                            let srow = src + sy * w
                            for x in 0 ..< w {
                                let sx = (mirror ? w - 1 - x : x) + dx
                                row[x] = sx >= 0 && sx < w ? t[Int(srow[sx])] : zero
                            }
                        }
                    }
                }
            }
        }
    }

    /// Data in memory under RandomResizedCrop or TrivialAugment: each image made as bytes
    /// (its crop, then flip, from its (seed, epoch, image) stream; then TrivialAugment from
    /// its own), then normalised.
    func fillAugmentedBytes(images: UnsafeMutablePointer<Float>, labels: UnsafeMutablePointer<Int32>,
                            indices: [Int32], epoch: Int) {
        let d = dataset
        let c = d.channels, h = d.height, w = d.width, plane = h * w
        let pad = augmentation.cropPadding
        var out = [UInt8](repeating: 0, count: d.imageBytes)
        d.pixels.withUnsafeBufferPointer { px in
            table.withUnsafeBufferPointer { lut in
                out.withUnsafeMutableBufferPointer { o in
                    for (b, index) in indices.enumerated() {
                        let i = Int(index)
                        labels[b] = d.labels[i]
                        let src = px.baseAddress! + i * d.imageBytes
                        var rng = Xoshiro256(seed: StreamSeed.mix(seed, StreamSeed.augmentation, UInt64(epoch), UInt64(i)))
                        if let crop = augmentation.randomResizedCrop {
                            let region = CropRegion.randomResized(width: w, height: h, scale: crop.scale, ratio: crop.ratio, rng: &rng)
                            let mirror = augmentation.horizontalFlip && rng.next() & 1 == 1
                            Resample.crop(src, .planar(channels: c, height: h, width: w), region: region,
                                          outWidth: w, outHeight: h, mirror: mirror, into: o.baseAddress!)
                        } else {
                            // The padded crop and flip of `fillUnmixed`, the same draws, as bytes.
                            var dy = 0, dx = 0
                            if pad > 0 {
                                dy = Int(rng.next() % UInt64(2 * pad + 1)) - pad
                                dx = Int(rng.next() % UInt64(2 * pad + 1)) - pad
                            }
                            let mirror = augmentation.horizontalFlip && rng.next() & 1 == 1
                            for ch in 0 ..< c {
                                for y in 0 ..< h {
                                    for x in 0 ..< w {
                                        let sy = y + dy, sx = (mirror ? w - 1 - x : x) + dx
                                        o[ch * plane + y * w + x] = sy >= 0 && sy < h && sx >= 0 && sx < w ? src[ch * plane + sy * w + sx] : 0
                                    }
                                }
                            }
                        }
                        if augmentation.trivialAugment {
                            var ta = Xoshiro256(seed: StreamSeed.mix(seed, StreamSeed.trivialAugment, UInt64(epoch), UInt64(i)))
                            TrivialAugment.apply(TrivialAugment.choose(&ta), to: o.baseAddress!, channels: c, height: h, width: w)
                        }
                        normalise(o.baseAddress!, into: images + b * d.imageBytes, lut: lut.baseAddress!)
                    }
                }
            }
        }
    }
}

/// How one image is mixed: with which partner, its own label's weight λ, and for CutMix
/// the partner's box (rows y0..<y1, columns x0..<x1) pasted over it.
public struct MixPlan: Sendable, Equatable {
    public struct Box: Sendable, Equatable {
        public var y0: Int, y1: Int, x0: Int, x1: Int
    }
    public var partner: Int32
    public var weight: Float
    public var box: Box?
}
