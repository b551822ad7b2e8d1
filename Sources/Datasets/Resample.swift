import Core
import Foundation

/// A rectangle of a source picture in pixel units (fractional: a crop chosen on the full
/// picture keeps its place on a picture decoded at a reduced scale).
public struct PixelRegion: Sendable, Equatable {
    public var x: Double
    public var y: Double
    public var width: Double
    public var height: Double
    public init(x: Double, y: Double, width: Double, height: Double) {
        self.x = x; self.y = y; self.width = width; self.height = height
    }

    /// The same region on the picture scaled by (sx, sy).
    public func scaled(_ sx: Double, _ sy: Double) -> PixelRegion {
        PixelRegion(x: x * sx, y: y * sy, width: width * sx, height: height * sy)
    }
}

/// 8-bit pixels laid out with a stride per pixel and per channel: planar (C, H, W) has
/// pixel stride 1 and channel stride H·W; interleaved RGB has 3 and 1.
public struct PixelLayout: Sendable, Equatable {
    public var width: Int
    public var height: Int
    public var channels: Int
    public var pixelStride: Int
    public var channelStride: Int

    public static func planar(channels: Int, height: Int, width: Int) -> PixelLayout {
        PixelLayout(width: width, height: height, channels: channels, pixelStride: 1, channelStride: height * width)
    }
    public static func interleaved(channels: Int, height: Int, width: Int) -> PixelLayout {
        PixelLayout(width: width, height: height, channels: channels, pixelStride: channels, channelStride: 1)
    }
}

/// Crop-and-resize with an antialiased bilinear (triangle) filter, as Pillow's
/// `Image.resize(size, BILINEAR, box=region)` and torchvision's `antialias=True` compute
/// it: each output pixel is a normalised triangle-weighted mean of the source pixels
/// under it, the triangle widened by the shrink factor when shrinking, so a picture
/// shrunk 8× averages its pixels instead of sampling one in eight. Separable: rows, then
/// columns, with a float intermediate; the result is rounded to bytes, as a PIL image is.
public enum Resample {
    /// One axis's filter: for output position o, `count[o]` source positions from `first[o]`
    /// with weights `weights[o·taps ..< o·taps + count[o]]` summing to 1.
    struct Axis {
        var first: [Int]
        var count: [Int]
        var weights: [Float]
        var taps: Int
    }

    /// Pillow's `precompute_coeffs` for the bilinear filter (support 1).
    static func axis(inSize: Int, start: Double, length: Double, outSize: Int) -> Axis {
        let scale = length / Double(outSize)
        let filterScale = max(scale, 1)
        let support = filterScale  // bilinear support 1, widened when shrinking
        let taps = Int(support.rounded(.up)) * 2 + 1
        var first = [Int](repeating: 0, count: outSize), count = [Int](repeating: 0, count: outSize)
        var weights = [Float](repeating: 0, count: outSize * taps)
        let inverse = 1 / filterScale
        for o in 0 ..< outSize {
            let center = start + (Double(o) + 0.5) * scale
            var lo = Int((center - support + 0.5).rounded(.down))
            var hi = Int((center + support + 0.5).rounded(.down))
            lo = max(lo, 0); hi = min(hi, inSize)
            // A region that lies outside the picture still reads its nearest edge pixel.
            if hi <= lo { lo = min(max(Int(center.rounded(.down)), 0), inSize - 1); hi = lo + 1 }
            var w = [Double](repeating: 0, count: hi - lo)
            var total = 0.0
            for j in lo ..< hi {
                let x = (Double(j) - center + 0.5) * inverse
                let t = max(0, 1 - abs(x))
                w[j - lo] = t; total += t
            }
            if total == 0 { w = [Double](repeating: 0, count: hi - lo); w[0] = 1; total = 1 }
            let n = min(hi - lo, taps)
            first[o] = lo; count[o] = n
            for k in 0 ..< n { weights[o * taps + k] = Float(w[k] / total) }
        }
        return Axis(first: first, count: count, weights: weights, taps: taps)
    }

    /// Resamples `region` of `src` to (outHeight, outWidth) planar bytes in `dst` (channel
    /// by channel, `src`'s channels), mirrored left to right when `mirror`.
    public static func crop(_ src: UnsafePointer<UInt8>, _ layout: PixelLayout, region: PixelRegion,
                            outWidth: Int, outHeight: Int, mirror: Bool, into dst: UnsafeMutablePointer<UInt8>) {
        let ax = axis(inSize: layout.width, start: region.x, length: region.width, outSize: outWidth)
        let ay = axis(inSize: layout.height, start: region.y, length: region.height, outSize: outHeight)
        // The source rows any output row reads.
        let rowLo = ay.first.min() ?? 0
        let rowHi = zip(ay.first, ay.count).map { $0 + $1 }.max() ?? 0
        let rows = rowHi - rowLo
        let tmp = UnsafeMutablePointer<Float>.allocate(capacity: max(1, rows * outWidth))
        defer { tmp.deallocate() }
        let ps = layout.pixelStride, rowStride = layout.width * layout.pixelStride
        ax.weights.withUnsafeBufferPointer { wxb in
            ay.weights.withUnsafeBufferPointer { wyb in
                let wx = wxb.baseAddress!, wy = wyb.baseAddress!
                for c in 0 ..< layout.channels {
                    let plane = src + c * layout.channelStride
                    // Rows: tmp (rows, outWidth).
                    for r in 0 ..< rows {
                        let srow = plane + (rowLo + r) * rowStride
                        let trow = tmp + r * outWidth
                        for o in 0 ..< outWidth {
                            let f = ax.first[o], n = ax.count[o], w = wx + o * ax.taps
                            var s: Float = 0
                            for k in 0 ..< n { s += w[k] * Float(srow[(f + k) * ps]) }
                            trow[o] = s
                        }
                    }
                    // Columns: dst (outHeight, outWidth), mirrored on the way out.
                    let out = dst + c * outHeight * outWidth
                    for o in 0 ..< outHeight {
                        let f = ay.first[o] - rowLo, n = ay.count[o], w = wy + o * ay.taps
                        let orow = out + o * outWidth
                        for x in 0 ..< outWidth {
                            var s: Float = 0
                            for k in 0 ..< n { s += w[k] * tmp[(f + k) * outWidth + x] }
                            orow[mirror ? outWidth - 1 - x : x] = UInt8(clamping: Int((s + 0.5).rounded(.down)))
                        }
                    }
                }
            }
        }
    }

    /// The straightforward sum the separable passes compute: each output pixel directly
    /// from every source pixel's two weights (tests compare `crop` with it).
    public static func referenceCrop(_ src: [UInt8], _ layout: PixelLayout, region: PixelRegion,
                                     outWidth: Int, outHeight: Int, mirror: Bool) -> [UInt8] {
        let ax = axis(inSize: layout.width, start: region.x, length: region.width, outSize: outWidth)
        let ay = axis(inSize: layout.height, start: region.y, length: region.height, outSize: outHeight)
        var out = [UInt8](repeating: 0, count: layout.channels * outHeight * outWidth)
        for c in 0 ..< layout.channels {
            for oy in 0 ..< outHeight {
                for ox in 0 ..< outWidth {
                    var s = 0.0
                    for ky in 0 ..< ay.count[oy] {
                        for kx in 0 ..< ax.count[ox] {
                            let y = ay.first[oy] + ky, x = ax.first[ox] + kx
                            let v = Double(src[c * layout.channelStride + (y * layout.width + x) * layout.pixelStride])
                            s += Double(ay.weights[oy * ay.taps + ky]) * Double(ax.weights[ox * ax.taps + kx]) * v
                        }
                    }
                    let x = mirror ? outWidth - 1 - ox : ox
                    out[(c * outHeight + oy) * outWidth + x] = UInt8(clamping: Int((s + 0.5).rounded(.down)))
                }
            }
        }
        return out
    }
}

/// Where a training crop comes from: torchvision's `RandomResizedCrop.get_params` (a
/// random area fraction in `scale` and aspect ratio, log-uniform in `ratio`, up to ten
/// tries, then the central crop of the nearest allowed ratio), and the evaluation crop of
/// timm (`resize(size / crop_pct)` then `center_crop(size)`, as a region of the source).
public enum CropRegion {
    public static func randomResized(width: Int, height: Int, scale: ClosedRange<Double>, ratio: ClosedRange<Double>,
                                     rng: inout Xoshiro256) -> PixelRegion {
        let area = Double(width * height)
        let logLo = Foundation.log(ratio.lowerBound), logHi = Foundation.log(ratio.upperBound)
        func uniform(_ r: ClosedRange<Double>) -> Double { r.lowerBound + (r.upperBound - r.lowerBound) * Double(rng.nextUniform()) }
        for _ in 0 ..< 10 {
            let target = area * uniform(scale)
            let aspect = Foundation.exp(uniform(logLo ... logHi))
            let w = Int((target * aspect).squareRoot().rounded())
            let h = Int((target / aspect).squareRoot().rounded())
            if w > 0 && w <= width && h > 0 && h <= height {
                let y = Int(rng.next() % UInt64(height - h + 1))
                let x = Int(rng.next() % UInt64(width - w + 1))
                return PixelRegion(x: Double(x), y: Double(y), width: Double(w), height: Double(h))
            }
        }
        let inRatio = Double(width) / Double(height)
        var w = width, h = height
        if inRatio < ratio.lowerBound { h = Int((Double(w) / ratio.lowerBound).rounded()) }
        else if inRatio > ratio.upperBound { w = Int((Double(h) * ratio.upperBound).rounded()) }
        return PixelRegion(x: Double((width - w) / 2), y: Double((height - h) / 2), width: Double(w), height: Double(h))
    }

    /// timm's evaluation transform as one region: the shorter side resized to
    /// ⌊size / cropFraction⌋, then the central size×size.
    public static func center(width: Int, height: Int, size: Int, cropFraction: Double) -> PixelRegion {
        let resized = Double(Int(Double(size) / cropFraction))
        let factor = Double(min(width, height)) / resized  // source pixels per resized pixel
        let side = Double(size) * factor
        return PixelRegion(x: (Double(width) - side) / 2, y: (Double(height) - side) / 2, width: side, height: side)
    }
}
