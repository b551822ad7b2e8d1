/// SViTE+'s selection drawn on the images (like the paper's Fig. 5): each image enlarged,
/// its removed patches washed out to grey with a darker grey frame (`svite tokens` lays them
/// out with their true and predicted classes). Grey, not a hue: it reads the same to every
/// colour vision and in print.
public enum TokenPictures {
    /// The grey removed patches are blended toward, and how far, and their frame: a mid
    /// grey shows on black background and on light garments alike, the frame tells a
    /// removed light patch from a kept one.
    static let removedTint: [Double] = [175, 175, 175], removedMix = 0.7, frameGrey = 90.0

    /// One image enlarged by `scale`, its removed patches washed out to grey with a frame
    /// (RGB bytes, (size·scale)² pixels).
    public static func marked(pixels: [UInt8], channels: Int, size: Int, patch: Int, kept: Set<Int>, scale: Int) -> [UInt8] {
        let side = size * scale, grid = size / patch
        var out = [UInt8](repeating: 0, count: side * side * 3)
        for y in 0 ..< side {
            for x in 0 ..< side {
                let py = y / scale, px = x / scale
                let removed = !kept.contains((py / patch) * grid + px / patch)
                let edge = y % (patch * scale) == 0 || x % (patch * scale) == 0
                for ch in 0 ..< 3 {
                    var v = Double(pixels[(channels == 3 ? ch : 0) * size * size + py * size + px])
                    if removed { v = edge ? frameGrey : v + (removedTint[ch] - v) * removedMix }
                    out[(y * side + x) * 3 + ch] = UInt8(max(0, min(255, v.rounded())))
                }
            }
        }
        return out
    }

}

/// How the patches a selector removed differ from the ones it kept, over a set of images:
/// the numbers that say whether SViTE+ drops background (as the paper's Fig. 5) or the object.
public struct TokenStatistics: Sendable, Equatable, Codable {
    /// A patch counts as background when its mean pixel intensity (0…1) is below this.
    public static let backgroundThreshold = 0.02

    public var images = 0
    public var keptPatches = 0, removedPatches = 0
    /// Mean pixel intensity (0…1) of the kept and of the removed patches.
    public var keptMeanIntensity = 0.0, removedMeanIntensity = 0.0
    /// Fraction of background patches among all, among the removed and among the kept patches.
    public var backgroundOverall = 0.0, backgroundAmongRemoved = 0.0, backgroundAmongKept = 0.0
    /// Fraction of the background patches that were removed (1: every background patch gone).
    public var backgroundRemoved = 0.0

    /// images: per image its pixels (C, H, W) as bytes; kept: per image the kept patch indices.
    public init(images: [[UInt8]], channels: Int, size: Int, patch: Int, kept: [[Int]]) {
        precondition(images.count == kept.count, "TokenStatistics: one kept list per image")
        let grid = size / patch
        var sum = (kept: 0.0, removed: 0.0), background = (kept: 0, removed: 0)
        for (n, pixels) in images.enumerated() {
            let keptSet = Set(kept[n])
            for gy in 0 ..< grid {
                for gx in 0 ..< grid {
                    var total = 0
                    for ch in 0 ..< channels {
                        for y in 0 ..< patch {
                            let row = ch * size * size + (gy * patch + y) * size + gx * patch
                            for x in 0 ..< patch { total += Int(pixels[row + x]) }
                        }
                    }
                    let mean = Double(total) / Double(channels * patch * patch * 255)
                    let isBackground = mean < Self.backgroundThreshold
                    if keptSet.contains(gy * grid + gx) {
                        keptPatches += 1; sum.kept += mean; if isBackground { background.kept += 1 }
                    } else {
                        removedPatches += 1; sum.removed += mean; if isBackground { background.removed += 1 }
                    }
                }
            }
        }
        self.images = images.count
        func ratio(_ a: Double, _ b: Int) -> Double { b > 0 ? a / Double(b) : 0 }
        keptMeanIntensity = ratio(sum.kept, keptPatches)
        removedMeanIntensity = ratio(sum.removed, removedPatches)
        backgroundOverall = ratio(Double(background.kept + background.removed), keptPatches + removedPatches)
        backgroundAmongRemoved = ratio(Double(background.removed), removedPatches)
        backgroundAmongKept = ratio(Double(background.kept), keptPatches)
        backgroundRemoved = ratio(Double(background.removed), background.kept + background.removed)
    }

    /// Two lines for a terminal.
    public var summary: String {
        func pct(_ v: Double) -> String { String(format: "%.1f%%", 100 * v) }
        let verdict = removedPatches == 0 ? "nothing removed"
            : backgroundAmongRemoved >= backgroundOverall ? "the selector removes background first"
            : "the selector removes object patches rather than background"
        return String(format: "mean intensity: removed patches %.3f, kept %.3f (0 black … 1 white); ", removedMeanIntensity, keptMeanIntensity)
            + "background (mean < \(Self.backgroundThreshold)): \(pct(backgroundOverall)) of all patches, \(pct(backgroundAmongRemoved)) of the removed, "
            + "\(pct(backgroundAmongKept)) of the kept; \(pct(backgroundRemoved)) of the background patches removed\n\(verdict)"
    }
}
