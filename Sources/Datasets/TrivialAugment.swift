import Core
import Foundation

/// TrivialAugment (Müller & Hutter 2021; torchvision's `TrivialAugmentWide`): one operation
/// of fourteen, drawn uniformly, at one of 31 magnitudes drawn uniformly, with a random
/// sign where it has one. On 8-bit planar (C, H, W) pictures, in place; geometric
/// operations sample the nearest pixel and fill with 0, as torchvision does by default.
/// One difference: torchvision's translations are up to 32 pixels whatever the size (made
/// for 224-pixel ImageNet crops); here they are up to 32/224 of the side, so a 28-pixel
/// picture moves up to 4 pixels instead of out of sight.
public enum TrivialAugment {
    public enum Operation: Int, CaseIterable, Sendable {
        case identity, shearX, shearY, translateX, translateY, rotate, brightness, color, contrast,
             sharpness, posterize, solarize, autoContrast, equalize
    }

    public struct Choice: Sendable, Equatable {
        public var operation: Operation
        /// Shears: the shear factor; translations: a fraction of the side; rotation: degrees;
        /// brightness, colour, contrast, sharpness: the enhancement factor minus 1; posterize:
        /// bits kept; solarize: the threshold.
        public var magnitude: Double
        public init(operation: Operation, magnitude: Double) { self.operation = operation; self.magnitude = magnitude }
    }

    static let bins = 31

    /// torchvision's draw: the operation, then the bin, then the sign.
    public static func choose(_ rng: inout Xoshiro256) -> Choice {
        let op = Operation(rawValue: Int(rng.next() % UInt64(Operation.allCases.count)))!
        let bin = Int(rng.next() % UInt64(bins))
        let t = Double(bin) / Double(bins - 1)
        var m: Double
        var signed = true
        switch op {
        case .identity, .autoContrast, .equalize: m = 0; signed = false
        case .shearX, .shearY, .brightness, .color, .contrast, .sharpness: m = 0.99 * t
        case .translateX, .translateY: m = 32.0 / 224 * t
        case .rotate: m = 135 * t
        case .posterize: m = Double(8 - Int((Double(bin) / (Double(bins - 1) / 6)).rounded(.toNearestOrEven))); signed = false
        case .solarize: m = 255 * (1 - t); signed = false
        }
        if signed && rng.next() & 1 == 1 { m = -m }
        return Choice(operation: op, magnitude: m)
    }

    /// Applies `choice` to the planar picture `img` (channels × height × width bytes).
    public static func apply(_ choice: Choice, to img: UnsafeMutablePointer<UInt8>, channels: Int, height h: Int, width w: Int) {
        let m = choice.magnitude, plane = h * w
        switch choice.operation {
        case .identity: return
        case .shearX: warp(img, channels, h, w) { x, y in (x + m * y, y) }
        case .shearY: warp(img, channels, h, w) { x, y in (x, y + m * x) }
        case .translateX: let d = (m * Double(w)).rounded(.towardZero); warp(img, channels, h, w) { x, y in (x - d, y) }
        case .translateY: let d = (m * Double(h)).rounded(.towardZero); warp(img, channels, h, w) { x, y in (x, y - d) }
        case .rotate:
            let a = m * Double.pi / 180, c = Foundation.cos(a), s = Foundation.sin(a)
            let cx = Double(w) * 0.5, cy = Double(h) * 0.5
            // The source of each output pixel centre, turned back about the picture's centre.
            warp(img, channels, h, w) { x, y in
                let dx = x - cx, dy = y - cy
                return (c * dx - s * dy + cx, s * dx + c * dy + cy)
            }
        case .brightness:
            // Blend with black: v·f.
            for i in 0 ..< channels * plane { img[i] = clamp(Double(img[i]) * (1 + m)) }
        case .color:
            guard channels == 3 else { return }
            let grey = luma(img, plane)
            for c in 0 ..< 3 { for i in 0 ..< plane { img[c * plane + i] = blend(Double(grey[i]), Double(img[c * plane + i]), 1 + m) } }
        case .contrast:
            // Blend with the mean of the picture's luma (Pillow's ImageEnhance.Contrast).
            let grey = channels == 3 ? luma(img, plane) : Array(UnsafeBufferPointer(start: img, count: plane))
            let mean = (Double(grey.reduce(0) { $0 + Int($1) }) / Double(plane)).rounded()
            for i in 0 ..< channels * plane { img[i] = blend(mean, Double(img[i]), 1 + m) }
        case .sharpness:
            // Blend with the 3×3 smoothing [1 1 1; 1 5 1; 1 1 1]/13, the border left as it is.
            guard h >= 3 && w >= 3 else { return }
            for c in 0 ..< channels {
                let p = img + c * plane
                let src = Array(UnsafeBufferPointer(start: p, count: plane))
                for y in 1 ..< h - 1 {
                    for x in 1 ..< w - 1 {
                        var s = 4 * Int(src[y * w + x])
                        for dy in -1 ... 1 { for dx in -1 ... 1 { s += Int(src[(y + dy) * w + x + dx]) } }
                        let smooth = (Double(s) / 13).rounded()
                        p[y * w + x] = blend(smooth, Double(src[y * w + x]), 1 + m)
                    }
                }
            }
        case .posterize:
            let keep = UInt8(truncatingIfNeeded: 0xFF << (8 - max(0, min(8, Int(m)))))
            for i in 0 ..< channels * plane { img[i] &= keep }
        case .solarize:
            for i in 0 ..< channels * plane where Double(img[i]) >= m { img[i] = 255 - img[i] }
        case .autoContrast:
            for c in 0 ..< channels {
                let p = img + c * plane
                var lo: UInt8 = 255, hi: UInt8 = 0
                for i in 0 ..< plane { lo = min(lo, p[i]); hi = max(hi, p[i]) }
                guard hi > lo else { continue }
                let scale = 255 / Double(hi - lo)
                for i in 0 ..< plane { p[i] = clamp((Double(p[i] - lo) * scale).rounded(.down)) }
            }
        case .equalize:
            // Pillow's ImageOps.equalize, channel by channel.
            for c in 0 ..< channels {
                let p = img + c * plane
                var histogram = [Int](repeating: 0, count: 256)
                for i in 0 ..< plane { histogram[Int(p[i])] += 1 }
                let used = histogram.filter { $0 > 0 }
                guard used.count > 1 else { continue }
                let step = (used.dropLast().reduce(0, +)) / 255
                guard step > 0 else { continue }
                var lut = [UInt8](repeating: 0, count: 256)
                var n = step / 2
                for v in 0 ..< 256 {
                    lut[v] = UInt8(min(255, n / step))
                    n += histogram[v]
                }
                for i in 0 ..< plane { p[i] = lut[Int(p[i])] }
            }
        }
    }

    @inline(__always) static func clamp(_ v: Double) -> UInt8 { UInt8(max(0, min(255, v.rounded()))) }
    /// Pillow's Image.blend(a, b, f) = a + f·(b − a), clipped.
    @inline(__always) static func blend(_ a: Double, _ b: Double, _ f: Double) -> UInt8 { clamp(a + f * (b - a)) }

    static func luma(_ img: UnsafePointer<UInt8>, _ plane: Int) -> [UInt8] {
        (0 ..< plane).map { i -> UInt8 in
            let r = Int(img[i]) * 299, g = Int(img[plane + i]) * 587, b = Int(img[2 * plane + i]) * 114
            return UInt8((r + g + b + 500) / 1000)
        }
    }

    /// Each output pixel centre (x + ½, y + ½) takes the source pixel nearest `source(x, y)`
    /// (in the same half-pixel coordinates), 0 outside.
    static func warp(_ img: UnsafeMutablePointer<UInt8>, _ channels: Int, _ h: Int, _ w: Int, _ source: (Double, Double) -> (Double, Double)) {
        let plane = h * w
        var from = [Int](repeating: -1, count: plane)
        for y in 0 ..< h {
            for x in 0 ..< w {
                let (sx, sy) = source(Double(x) + 0.5, Double(y) + 0.5)
                let ix = Int((sx - 0.5).rounded(.toNearestOrEven)), iy = Int((sy - 0.5).rounded(.toNearestOrEven))
                if ix >= 0 && ix < w && iy >= 0 && iy < h { from[y * w + x] = iy * w + ix }
            }
        }
        for c in 0 ..< channels {
            let p = img + c * plane
            let src = Array(UnsafeBufferPointer(start: p, count: plane))
            for i in 0 ..< plane { p[i] = from[i] >= 0 ? src[from[i]] : 0 }
        }
    }
}
