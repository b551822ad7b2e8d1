import Foundation

/// Pictures of sparse topologies: each prunable layer's mask as a heatmap ([out, in] as
/// rows × columns; large layers are shown as the fraction active per block), initial,
/// current and explored side by side, and a per-layer density chart (SVG).
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

    /// The tints of the three panels: initial, current, explored.
    public static let initialColour: [UInt8] = [40, 40, 40], currentColour: [UInt8] = [20, 60, 160], exploredColour: [UInt8] = [170, 40, 40]

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

    /// Per-layer density (current) and exploration as a horizontal bar chart in SVG.
    public static func densityChart(_ layers: [Layer], title: String) -> String {
        let rowH = 18, left = 220, width = 420, top = 40
        let height = top + rowH * layers.count + 56
        // Wide enough for the title (about 7.6 px a character at 14 px).
        let svgWidth = max(left + width + 120, Int(Double(title.count) * 7.6) + 20)
        var s = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(svgWidth)" height="\(height)" font-family="sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="10" y="20" font-size="14">\(title)</text>
        <rect x="\(left)" y="26" width="10" height="10" fill="#1f4fa0"/><text x="\(left + 14)" y="35">active now</text>
        <rect x="\(left + 100)" y="26" width="10" height="10" fill="#e8b0b0"/><text x="\(left + 114)" y="35">ever active (explored)</text>

        """
        for (i, l) in layers.enumerated() {
            let y = top + i * rowH
            let n = Double(l.current.count)
            let d = Double(l.current.filter { $0 != 0 }.count) / n, e = Double(l.explored.filter { $0 != 0 }.count) / n
            s += "<text x=\"\(left - 6)\" y=\"\(y + 13)\" text-anchor=\"end\">\(l.name)</text>\n"
            s += "<rect x=\"\(left)\" y=\"\(y + 2)\" width=\"\(Int(e * Double(width)))\" height=\"\(rowH - 4)\" fill=\"#e8b0b0\"/>\n"
            s += "<rect x=\"\(left)\" y=\"\(y + 2)\" width=\"\(Int(d * Double(width)))\" height=\"\(rowH - 4)\" fill=\"#1f4fa0\"/>\n"
            s += String(format: "<text x=\"%d\" y=\"%d\">%.1f%% / %.1f%%</text>\n", left + width + 6, y + 13, d * 100, e * 100)
        }
        let bottom = top + rowH * layers.count
        s += "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(bottom)\" stroke=\"black\"/>\n"
        // The x axis: ticks every 25% and what the bars measure.
        s += "<line x1=\"\(left)\" y1=\"\(bottom)\" x2=\"\(left + width)\" y2=\"\(bottom)\" stroke=\"black\"/>\n"
        for t in stride(from: 0, through: 100, by: 25) {
            let x = left + width * t / 100
            s += "<line x1=\"\(x)\" y1=\"\(bottom)\" x2=\"\(x)\" y2=\"\(bottom + 5)\" stroke=\"black\"/>"
            s += "<text x=\"\(x)\" y=\"\(bottom + 18)\" text-anchor=\"middle\">\(t)%</text>\n"
        }
        s += "<text x=\"\(left + width / 2)\" y=\"\(bottom + 36)\" text-anchor=\"middle\">share of the layer's weights (active now / ever active)</text>\n</svg>\n"
        return s
    }

    /// Structured runs: a grid of blocks × units (heads, like the paper's Fig. A7) where
    /// each cell says whether the unit is kept now, was kept at some time, or never was,
    /// and whether it was in the initial topology (a dot). `current`, `explored` and
    /// `initial` are [block][unit].
    public static func unitGrid(current: [[Bool]], explored: [[Bool]], initial: [[Bool]], unitName: String, title: String) -> String {
        let cell = 28, left = 70, top = 56
        let units = current.first?.count ?? 0
        // Wide enough for the grid, the legend (about 430 px) and the title (about 7.6 px a character).
        let width = max(left + cell * units + 20, 450, Int(Double(title.count) * 7.6) + 20), height = top + cell * current.count + 46
        var s = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(width)" height="\(height)" font-family="sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="10" y="20" font-size="14">\(title)</text>
        <rect x="10" y="30" width="10" height="10" fill="#1f4fa0"/><text x="24" y="39">kept now</text>
        <rect x="90" y="30" width="10" height="10" fill="#e8b0b0"/><text x="104" y="39">kept earlier</text>
        <rect x="190" y="30" width="10" height="10" fill="#f2f2f2" stroke="#999"/><text x="204" y="39">never kept</text>
        <circle cx="295" cy="35" r="3" fill="white" stroke="black"/><text x="302" y="39">in the initial topology</text>

        """
        for (l, row) in current.enumerated() {
            let y = top + l * cell
            s += "<text x=\"\(left - 6)\" y=\"\(y + cell / 2 + 4)\" text-anchor=\"end\">block \(l)</text>\n"
            for (u, on) in row.enumerated() {
                let x = left + u * cell
                let fill = on ? "#1f4fa0" : (explored[l][u] ? "#e8b0b0" : "#f2f2f2")
                s += "<rect x=\"\(x + 1)\" y=\"\(y + 1)\" width=\"\(cell - 2)\" height=\"\(cell - 2)\" fill=\"\(fill)\" stroke=\"#999\"/>\n"
                if initial[l][u] { s += "<circle cx=\"\(x + cell / 2)\" cy=\"\(y + cell / 2)\" r=\"3\" fill=\"white\" stroke=\"black\"/>\n" }
            }
        }
        // Unit numbers under the columns (a name per column would not fit in 28 px), the name once.
        for u in 0 ..< units {
            s += "<text x=\"\(left + u * cell + cell / 2)\" y=\"\(top + cell * current.count + 16)\" text-anchor=\"middle\">\(u)</text>\n"
        }
        s += "<text x=\"\(left + cell * units / 2)\" y=\"\(top + cell * current.count + 34)\" text-anchor=\"middle\">\(unitName.trimmingCharacters(in: .whitespaces))</text>\n"
        return s + "</svg>\n"
    }
}
