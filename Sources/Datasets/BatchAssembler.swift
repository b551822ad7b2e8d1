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
        loader?.prefetch(indices.map { .init(index: $0, epoch: augment ? epoch : 0, augment: augment) })
    }

    /// One image as the model sees it before normalisation, (C, H, W) bytes, unaugmented
    /// (pictures of what a model saw).
    public func bytes(of index: Int) -> [UInt8] {
        if let loader { return loader.make(.init(index: Int32(index), epoch: 0, augment: false)) }
        let n = dataset.imageBytes
        return Array(dataset.pixels[index * n ..< (index + 1) * n])
    }

    /// Fills images (indices.count, C, H, W) and labels. `augment` false gives the plain
    /// normalised images (evaluation).
    public func fill(images: UnsafeMutablePointer<Float>, labels: UnsafeMutablePointer<Int32>,
                     indices: [Int32], epoch: Int, augment: Bool) {
        let d = dataset
        let c = d.channels, h = d.height, w = d.width, plane = h * w
        if let loader {
            let made = loader.take(indices.map { .init(index: $0, epoch: augment ? epoch : 0, augment: augment) })
            table.withUnsafeBufferPointer { lut in
                for (b, index) in indices.enumerated() {
                    labels[b] = d.labels[Int(index)]
                    made[b].withUnsafeBufferPointer { src in
                        for ch in 0 ..< c {
                            let t = lut.baseAddress! + ch * 256, s = src.baseAddress! + ch * plane
                            let dst = images + b * d.imageBytes + ch * plane
                            for k in 0 ..< plane { dst[k] = t[Int(s[k])] }
                        }
                    }
                }
            }
            return
        }
        if augment, let crop = augmentation.randomResizedCrop {
            fillResizedCrops(images: images, labels: labels, indices: indices, epoch: epoch, crop: crop)
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

    /// Data in memory under RandomResizedCrop: each image's region (then flip) from its
    /// (seed, epoch, image) stream, resized back to the image's size.
    func fillResizedCrops(images: UnsafeMutablePointer<Float>, labels: UnsafeMutablePointer<Int32>,
                          indices: [Int32], epoch: Int, crop: DataConfig.ResizedCrop) {
        let d = dataset
        let c = d.channels, h = d.height, w = d.width, plane = h * w
        var out = [UInt8](repeating: 0, count: d.imageBytes)
        d.pixels.withUnsafeBufferPointer { px in
            table.withUnsafeBufferPointer { lut in
                out.withUnsafeMutableBufferPointer { o in
                    for (b, index) in indices.enumerated() {
                        let i = Int(index)
                        labels[b] = d.labels[i]
                        var rng = Xoshiro256(seed: StreamSeed.mix(seed, StreamSeed.augmentation, UInt64(epoch), UInt64(i)))
                        let region = CropRegion.randomResized(width: w, height: h, scale: crop.scale, ratio: crop.ratio, rng: &rng)
                        let mirror = augmentation.horizontalFlip && rng.next() & 1 == 1
                        Resample.crop(px.baseAddress! + i * d.imageBytes, .planar(channels: c, height: h, width: w), region: region,
                                      outWidth: w, outHeight: h, mirror: mirror, into: o.baseAddress!)
                        for ch in 0 ..< c {
                            let t = lut.baseAddress! + ch * 256, s = o.baseAddress! + ch * plane
                            let dst = images + b * d.imageBytes + ch * plane
                            for k in 0 ..< plane { dst[k] = t[Int(s[k])] }
                        }
                    }
                }
            }
        }
    }
}
