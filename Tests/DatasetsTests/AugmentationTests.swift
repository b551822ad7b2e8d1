import Core
import Datasets
import Foundation
import Testing
import TestSupport

@Suite("augmentation")
struct AugmentationTests {
    typealias Op = TrivialAugment.Operation

    func apply(_ op: Op, _ m: Double, _ img: [UInt8], channels: Int = 1, side: Int) -> [UInt8] {
        var out = img
        out.withUnsafeMutableBufferPointer {
            TrivialAugment.apply(.init(operation: op, magnitude: m), to: $0.baseAddress!, channels: channels, height: side, width: side)
        }
        return out
    }

    @Test func trivialAugmentDrawsAsTorchvision() {
        var rng = Xoshiro256(seed: 4)
        var counts = [Op: Int](), negative = Set<Op>()
        for _ in 0 ..< 14_000 {
            let c = TrivialAugment.choose(&rng)
            counts[c.operation, default: 0] += 1
            if c.magnitude < 0 { negative.insert(c.operation) }
            switch c.operation {
            case .shearX, .shearY, .brightness, .color, .contrast, .sharpness: #expect(abs(c.magnitude) <= 0.99)
            case .translateX, .translateY: #expect(abs(c.magnitude) <= 32.0 / 224 + 1e-12)
            case .rotate: #expect(abs(c.magnitude) <= 135)
            case .posterize: #expect((2 ... 8).contains(Int(c.magnitude)) && c.magnitude == c.magnitude.rounded())
            case .solarize: #expect((0 ... 255).contains(c.magnitude))
            case .identity, .autoContrast, .equalize: #expect(c.magnitude == 0)
            }
        }
        #expect(counts.count == 14 && counts.values.allSatisfy { (800 ... 1200).contains($0) }, "\(counts)")
        #expect(negative == [.shearX, .shearY, .translateX, .translateY, .rotate, .brightness, .color, .contrast, .sharpness])
    }

    @Test func eachOperationDoesWhatItSays() {
        let side = 16, plane = side * side
        var rng = Xoshiro256(seed: 9)
        let img = (0 ..< plane).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        func at(_ a: [UInt8], _ x: Int, _ y: Int) -> UInt8 { a[y * side + x] }
        #expect(apply(.identity, 0, img, side: side) == img)
        // Translation by 3/16 of the side: 3 pixels right, zeros behind.
        let moved = apply(.translateX, 3.0 / 16, img, side: side)
        for y in 0 ..< side { for x in 0 ..< side { #expect(at(moved, x, y) == (x < 3 ? 0 : at(img, x - 3, y))) } }
        let down = apply(.translateY, -2.0 / 16, img, side: side)
        for y in 0 ..< side { for x in 0 ..< side { #expect(at(down, x, y) == (y >= side - 2 ? 0 : at(img, x, y + 2))) } }
        // A quarter turn of a square picture is a permutation: out(x, y) = in(w − 1 − y, x).
        let turned = apply(.rotate, 90, img, side: side)
        for y in 0 ..< side { for x in 0 ..< side { #expect(at(turned, x, y) == at(img, side - 1 - y, x)) } }
        // Shear along x: row y reads from x + m·(y + ½), nearest.
        let sheared = apply(.shearX, 0.5, img, side: side)
        for y in 0 ..< side {
            for x in 0 ..< side {
                let sx = Int((Double(x) + 0.5 * (Double(y) + 0.5)).rounded(.toNearestOrEven))
                #expect(at(sheared, x, y) == (sx < side ? at(img, sx, y) : 0))
            }
        }
        #expect(apply(.posterize, 3, img, side: side).allSatisfy { $0 & 0x1F == 0 })
        #expect(apply(.solarize, 128, img, side: side) == img.map { $0 >= 128 ? 255 - $0 : $0 })
        let dull = img.map { 100 + $0 / 4 }
        let stretched = apply(.autoContrast, 0, dull, side: side)
        #expect(stretched.min() == 0 && stretched.max() == 255)
        // Two levels (255 pixels and 1): Pillow's equalize spreads them to the ends.
        let two = (0 ..< plane).map { $0 == 0 ? UInt8(20) : 10 }
        #expect(Set(apply(.equalize, 0, two, side: side)) == [0, 255])
        #expect(apply(.brightness, -0.5, img, side: side) == img.map { UInt8((Double($0) * 0.5).rounded()) })
        // Contrast to nothing: every pixel the picture's mean.
        let flat = apply(.contrast, -1, img, side: side)
        #expect(Set(flat).count == 1 && abs(Int(flat[0]) - img.reduce(0) { $0 + Int($1) } / plane) <= 1)
        // Colour and sharpness change nothing where there is nothing to change.
        let grey3 = img + img + img
        #expect(apply(.color, 0.8, grey3, channels: 3, side: side) == grey3)
        let even = [UInt8](repeating: 77, count: plane)
        #expect(apply(.sharpness, 0.9, even, side: side) == even)
        #expect(apply(.sharpness, 0.9, img, side: side) != img)
    }

    func fill(_ a: BatchAssembler, _ indices: [Int32], epoch: Int) -> [Float] {
        var images = [Float](repeating: .nan, count: indices.count * a.dataset.imageBytes)
        var labels = [Int32](repeating: -1, count: indices.count)
        images.withUnsafeMutableBufferPointer { i in
            labels.withUnsafeMutableBufferPointer { l in
                a.fill(images: i.baseAddress!, labels: l.baseAddress!, indices: indices, epoch: epoch, augment: true)
            }
        }
        return images
    }

    /// With TrivialAugment a batch is still a function of (seed, epoch, image); an image
    /// whose draw is the identity comes out exactly as without TrivialAugment (the crop and
    /// flip drawn alike); most others differ.
    @Test func trivialAugmentKeepsBatchesAFunctionOfSeedEpochImage() {
        let side = 14, count = 200
        var rng = Xoshiro256(seed: 2)
        let set = ImageDataset(name: "m", count: count, channels: 1, height: side, width: side, classes: 10,
                               pixels: (0 ..< count * side * side).map { _ in UInt8(truncatingIfNeeded: rng.next()) },
                               labels: (0 ..< count).map { Int32($0 % 10) })
        let plain = DataConfig.Augmentation(cropPadding: 2, horizontalFlip: true)
        var trivial = plain
        trivial.trivialAugment = true
        let a = BatchAssembler(dataset: set, mean: [0.5], std: [0.25], augmentation: trivial, seed: 8)
        let b = BatchAssembler(dataset: set, mean: [0.5], std: [0.25], augmentation: plain, seed: 8)
        let n = set.imageBytes
        let one = fill(a, [3, 7], epoch: 1), two = fill(a, [7, 3], epoch: 1)
        #expect(Array(one[0 ..< n]) == Array(two[n ..< 2 * n]))
        #expect(fill(a, [3, 7], epoch: 2) != one)
        var same = 0, changed = 0
        for i in 0 ..< count {
            var s = Xoshiro256(seed: StreamSeed.mix(8, StreamSeed.trivialAugment, 1, UInt64(i)))
            let op = TrivialAugment.choose(&s).operation
            let with = fill(a, [Int32(i)], epoch: 1), without = fill(b, [Int32(i)], epoch: 1)
            if op == .identity { #expect(with == without); same += 1 } else if with != without { changed += 1 }
        }
        // Some draws change nothing either (colour on grey, posterize to 8 bits, magnitude 0).
        #expect(same >= 5 && changed > (count - same) / 2, "identity \(same), changed \(changed)")
    }
}
