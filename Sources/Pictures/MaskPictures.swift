import Foundation

/// Pictures of sparse topologies: each prunable layer's mask as a heatmap ([out, in] as
/// rows × columns; large layers are shown as the fraction active per block), initial,
/// current and explored side by side (the charts of densities and heads are Plot's
/// MaskCharts).
public enum MaskPictures {
    public struct Layer {
        public var name: String
        public var rows: Int
        public var cols: Int
        public var initial: [Float]
        public var current: [Float]
        public var explored: [Float]
        public init(name: String, rows: Int, cols: Int, initial: [Float], current: [Float], explored: [Float]) {
            self.name = name; self.rows = rows; self.cols = cols
            self.initial = initial; self.current = current; self.explored = explored
        }
    }

    /// The tints, from Okabe and Ito's palette (told apart with every common colour-vision
    /// deficiency): the initial topology dark grey, active now blue, active earlier but not
    /// now orange; never active stays white.
    public static let initialColour: [UInt8] = [40, 40, 40], currentColour: [UInt8] = [0, 114, 178], exploredColour: [UInt8] = [230, 159, 0]

    /// The exploration panel: each weight (or block) blue as far as it is active now,
    /// orange as far as it was active at some step but is not now, white as far as it never
    /// was, so the weights prune-and-grow tried and dropped stand out even when nearly
    /// every weight has been active at some point.
    public static func explorationMap(current: [Float], explored: [Float], rows: Int, cols: Int, maxSide: Int) -> Image {
        let now = heatmap(current, rows: rows, cols: cols, maxSide: maxSide, colour: [0, 0, 0])
        let ever = heatmap(explored, rows: rows, cols: cols, maxSide: maxSide, colour: [0, 0, 0])
        var img = Image(width: now.width, height: now.height)
        for y in 0 ..< img.height {
            for x in 0 ..< img.width {
                // The black heatmaps carry the fractions: 255 − 255·a.
                let c = 1 - Double(now[x, y][0]) / 255, e = max(c, 1 - Double(ever[x, y][0]) / 255)
                img[x, y] = (0 ..< 3).map { k in
                    UInt8((255 * (1 - e) + Double(currentColour[k]) * c + Double(exploredColour[k]) * (e - c)).rounded())
                }
            }
        }
        return img
    }

    /// A heatmap: active dark, inactive light; `colour` tints the active weights.
    public static func heatmap(_ m: [Float], rows: Int, cols: Int, maxSide: Int, colour: [UInt8]) -> Image {
        let f = max(1, (max(rows, cols) + maxSide - 1) / maxSide)
        let h = (rows + f - 1) / f, w = (cols + f - 1) / f
        // Small layers are enlarged (whole pixels per weight) to at least a quarter of maxSide.
        let zoom = max(1, maxSide / 4 / max(h, w))
        var img = Image(width: w * zoom, height: h * zoom)
        for by in 0 ..< h {
            for bx in 0 ..< w {
                var on = 0, n = 0
                for y in by * f ..< min(rows, (by + 1) * f) {
                    for x in bx * f ..< min(cols, (bx + 1) * f) { n += 1; if m[y * cols + x] != 0 { on += 1 } }
                }
                let a = n == 0 ? 0 : Double(on) / Double(n)
                let px = colour.map { c in UInt8(255 - (255 - Double(c)) * a) }
                for dy in 0 ..< zoom { for dx in 0 ..< zoom { img[bx * zoom + dx, by * zoom + dy] = px } }
            }
        }
        return img
    }
}
