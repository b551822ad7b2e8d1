import CCairo
import Foundation

/// Pictures in a grid with what a paper prints around them: a title, a caption under each
/// panel, axis labels and a legend of colour swatches; small pictures are enlarged with
/// whole pixels (a 6-row grid of heads gets rows tall enough to see), never smoothed.
public struct Figure: Sendable {
    public struct Panel: Sendable {
        public var caption: String
        public var width: Int
        public var height: Int
        /// width × height × 3 bytes, row-major RGB.
        public var rgb: [UInt8]
        /// A second line under the caption (e.g. a prediction), in its own colour.
        public var note: String?
        public var noteColour: (Double, Double, Double)
        public init(caption: String, width: Int, height: Int, rgb: [UInt8], note: String? = nil,
                    noteColour: (Double, Double, Double) = (0.2, 0.2, 0.2)) {
            precondition(rgb.count == width * height * 3, "Figure.Panel: \(rgb.count) bytes for \(width)×\(height)")
            self.caption = caption; self.width = width; self.height = height; self.rgb = rgb
            self.note = note; self.noteColour = noteColour
        }
    }

    public struct LegendEntry: Sendable {
        public var colour: (Double, Double, Double)
        public var label: String
        public init(colour: (Double, Double, Double), label: String) { self.colour = colour; self.label = label }
    }

    public var title: String
    public var panels: [Panel]
    public var columns: Int
    public var xLabel: String?
    public var yLabel: String?
    public var legend: [LegendEntry]
    /// A picture's larger side is enlarged to at least this, its smaller to at least `minThin`.
    public var minSide = 160
    public var minThin = 60

    public init(title: String, panels: [Panel], columns: Int, xLabel: String? = nil, yLabel: String? = nil, legend: [LegendEntry] = []) {
        self.title = title; self.panels = panels; self.columns = max(1, columns)
        self.xLabel = xLabel; self.yLabel = yLabel; self.legend = legend
    }

    /// The displayed size of a panel: a whole-pixel enlargement of both sides until the
    /// larger reaches `minSide`, then of the thin side alone up to `minThin`.
    public func displaySize(_ p: Panel) -> (width: Int, height: Int, sx: Int, sy: Int) {
        let s = max(1, minSide / max(1, max(p.width, p.height)))
        var sx = s, sy = s
        if p.width * sx < minThin { sx = max(sx, (minThin + p.width - 1) / max(1, p.width)) }
        if p.height * sy < minThin { sy = max(sy, (minThin + p.height - 1) / max(1, p.height)) }
        return (p.width * sx, p.height * sy, sx, sy)
    }

    /// The smallest text (captions, legend: 12 units at `textScale` 1) is at least 8 pt when
    /// the figure is printed 3.5 in wide, as a paper's column: the text grows with the figure.
    public static let minimumTextFraction = (8.0 / 72) / 3.5

    typealias Layout = (cellW: Int, cellH: Int, left: Int, top: Int, width: Int, height: Int, rows: Int, textScale: Double, columns: Int)

    /// The layout whose text scale keeps the smallest text at `minimumTextFraction` of its
    /// width (the width grows with the text, so it is found by a few rounds). When the
    /// captions are what makes the figure wide, no scale can: then fewer columns are tried,
    /// and failing that the requested ones keep a text scale of at most 4.
    var layout: Layout {
        func fitted(_ columns: Int) -> (Layout, met: Bool) {
            var t = 1.0
            var l = layout(textScale: t, columns: columns)
            for _ in 0 ..< 40 {
                let needed = Self.minimumTextFraction * Double(l.width) / 12
                if needed <= t { return (l, true) }
                if needed > 4 { break }
                t = needed * 1.05
                l = layout(textScale: t, columns: columns)
            }
            return (l, false)
        }
        for c in stride(from: columns, through: 1, by: -1) {
            let (l, met) = fitted(c)
            if met { return l }
        }
        return fitted(columns).0
    }

    func layout(textScale t: Double, columns: Int) -> Layout {
        let sizes = panels.map(displaySize)
        let captions = panels.map { max(Self.measure($0.caption, size: 12 * t), Self.measure($0.note ?? "", size: 12 * t)) }
        let cellW = Int(max(Double(sizes.map(\.width).max() ?? 100), captions.max() ?? 0, 100).rounded(.up) + 12 * t)
        let captionH = Int(18 * t) + (panels.contains { $0.note != nil } ? Int(16 * t) : 0)
        let cellH = (sizes.map(\.height).max() ?? 100) + captionH + 12
        let rows = (panels.count + columns - 1) / columns
        let left = yLabel == nil ? 16 : Int(30 * t)
        // The panels (and the longest word of any text) set the width; the title, the axis
        // label and the legend wrap into it.
        let longestWord = ([title] + [xLabel ?? ""]).flatMap { $0.split(separator: " ") }.map { Self.measure(String($0), size: 16 * t) }.max() ?? 0
        let widestEntry = legend.map { 40 * t + Self.measure($0.label, size: 12 * t) }.max() ?? 0
        let width = Int(max(Double(left + cellW * min(columns, max(1, panels.count)) + 16), longestWord + 40, widestEntry + 40))
        let titleLines = Self.wrap(title, width: Double(width) - 20, size: 16 * t).count
        let top = Int(44 * t) + Int(20 * t) * (titleLines - 1)
        let xLines = xLabel.map { Self.wrap($0, width: Double(width) - 20, size: 13 * t).count } ?? 0
        let legendRows = legendLayout(width: Double(width), textScale: t).count
        let legendH = legend.isEmpty ? 0 : Int(20 * t) * legendRows + Int(10 * t)
        let height = top + cellH * rows + Int(18 * t) * xLines + (xLabel == nil ? 0 : Int(6 * t)) + legendH + 10
        return (cellW, cellH, left, top, width, height, rows, t, columns)
    }

    /// The legend's entries in rows that fit `width`, each entry with its width.
    func legendLayout(width: Double, textScale t: Double) -> [[(entry: LegendEntry, width: Double)]] {
        var rows: [[(entry: LegendEntry, width: Double)]] = []
        var used = 0.0
        for e in legend {
            let w = 40 * t + Self.measure(e.label, size: 12 * t)
            if rows.isEmpty || used + w > width - 40 { rows.append([]); used = 0 }
            rows[rows.count - 1].append((e, w))
            used += w
        }
        return rows
    }

    /// `s` in lines of whole words no wider than `width` at `size`.
    static func wrap(_ s: String, width: Double, size: Double) -> [String] {
        var lines: [String] = []
        var line = ""
        for word in s.split(separator: " ") {
            let candidate = line.isEmpty ? String(word) : line + " " + word
            if !line.isEmpty && measure(candidate, size: size) > width { lines.append(line); line = String(word) } else { line = candidate }
        }
        return lines + [line]
    }

    /// PNG pixels per layout unit: the text stays sharp when the figure is printed a column
    /// wide; the pictures are enlarged by whole pixels, never smoothed.
    public var pngScale = 3

    public func write(to path: String, format: LineChart.Format) throws {
        let l = layout
        try Canvas.write(width: Double(l.width), height: Double(l.height), scale: format == .png ? Double(pngScale) : 1,
                         to: path, format: format) { try draw($0) }
    }

    /// The size of the PNG `write` makes.
    public var pixelSize: (width: Int, height: Int) { (layout.width * pngScale, layout.height * pngScale) }

    /// The smallest text size (captions and legend) of the drawn figure, in layout units.
    public var smallestText: Double { 12 * layout.textScale }

    func draw(_ cr: OpaquePointer) throws {
        let l = layout
        let t = l.textScale
        cairo_set_source_rgb(cr, 0.1, 0.1, 0.1)
        cairo_set_font_size(cr, 16 * t)
        for (k, line) in Self.wrap(title, width: Double(l.width) - 20, size: 16 * t).enumerated() {
            Canvas.text(cr, line, x: Double(l.width) / 2, y: 28 * t + 20 * t * Double(k), align: 0.5)
        }
        for (k, p) in panels.enumerated() {
            let (dw, dh, sx, sy) = displaySize(p)
            let used = l.cellW * min(l.columns, panels.count)
            let cx = max(l.left, (l.width - used) / 2) + (k % l.columns) * l.cellW, cy = l.top + (k / l.columns) * l.cellH
            let x = Double(cx + (l.cellW - dw) / 2), y = Double(cy)
            try paint(cr, p, x: x, y: y, sx: Double(sx), sy: Double(sy))
            cairo_set_source_rgb(cr, 0.5, 0.5, 0.5)
            cairo_set_line_width(cr, 1)
            cairo_rectangle(cr, x - 0.5, y - 0.5, Double(dw) + 1, Double(dh) + 1)
            cairo_stroke(cr)
            cairo_set_source_rgb(cr, 0.1, 0.1, 0.1)
            cairo_set_font_size(cr, 12 * t)
            Canvas.text(cr, p.caption, x: Double(cx) + Double(l.cellW) / 2, y: y + Double(dh) + 16 * t, align: 0.5)
            if let note = p.note {
                cairo_set_source_rgb(cr, p.noteColour.0, p.noteColour.1, p.noteColour.2)
                Canvas.text(cr, note, x: Double(cx) + Double(l.cellW) / 2, y: y + Double(dh) + 31 * t, align: 0.5)
            }
        }
        cairo_set_source_rgb(cr, 0.1, 0.1, 0.1)
        cairo_set_font_size(cr, 13 * t)
        var bottom = Double(l.top + l.cellH * l.rows)
        if let xLabel {
            for line in Self.wrap(xLabel, width: Double(l.width) - 20, size: 13 * t) {
                Canvas.text(cr, line, x: Double(l.width) / 2, y: bottom + 14 * t, align: 0.5)
                bottom += 18 * t
            }
            bottom += 6 * t
        }
        if let yLabel {
            cairo_save(cr)
            cairo_translate(cr, 16 * t, Double(l.top) + Double(l.cellH * l.rows) / 2)
            cairo_rotate(cr, -Double.pi / 2)
            Canvas.text(cr, yLabel, x: 0, y: 0, align: 0.5)
            cairo_restore(cr)
        }
        if !legend.isEmpty {
            cairo_set_font_size(cr, 12 * t)
            for (r, row) in legendLayout(width: Double(l.width), textScale: t).enumerated() {
                var x = (Double(l.width) - row.map(\.width).reduce(0, +)) / 2
                let y = bottom + 14 * t + 20 * t * Double(r)
            for (e, w) in row {
                cairo_set_source_rgb(cr, e.colour.0, e.colour.1, e.colour.2)
                cairo_rectangle(cr, x, y - 10 * t, 14 * t, 14 * t); cairo_fill(cr)
                cairo_set_source_rgb(cr, 0.5, 0.5, 0.5)
                cairo_rectangle(cr, x + 0.5, y - 10 * t + 0.5, 14 * t - 1, 14 * t - 1); cairo_stroke(cr)
                cairo_set_source_rgb(cr, 0.1, 0.1, 0.1)
                Canvas.text(cr, e.label, x: x + 20 * t, y: y + 1, align: 0)
                x += w
            }
            }
        }
    }

    /// The panel's pixels, enlarged by whole pixels (nearest neighbour, no smoothing).
    func paint(_ cr: OpaquePointer, _ p: Panel, x: Double, y: Double, sx: Double, sy: Double) throws {
        guard let image = cairo_image_surface_create(CAIRO_FORMAT_RGB24, Int32(p.width), Int32(p.height)) else {
            throw CairoError(call: "cairo_image_surface_create", status: "no surface")
        }
        defer { cairo_surface_destroy(image) }
        try check("cairo_image_surface_create(\(p.width)×\(p.height))", cairo_surface_status(image))
        cairo_surface_flush(image)
        let stride = Int(cairo_image_surface_get_stride(image))
        guard let data = cairo_image_surface_get_data(image) else { throw CairoError(call: "cairo_image_surface_get_data", status: "no data") }
        p.rgb.withUnsafeBufferPointer { src in
            for row in 0 ..< p.height {
                let line = (data + row * stride).withMemoryRebound(to: UInt32.self, capacity: p.width) { $0 }
                for col in 0 ..< p.width {
                    let i = (row * p.width + col) * 3
                    line[col] = UInt32(src[i]) << 16 | UInt32(src[i + 1]) << 8 | UInt32(src[i + 2])
                }
            }
        }
        cairo_surface_mark_dirty(image)
        cairo_save(cr)
        cairo_translate(cr, x, y)
        cairo_scale(cr, sx, sy)
        cairo_set_source_surface(cr, image, 0, 0)
        cairo_pattern_set_filter(cairo_get_source(cr), CAIRO_FILTER_NEAREST)
        cairo_rectangle(cr, 0, 0, Double(p.width), Double(p.height))
        cairo_fill(cr)
        cairo_restore(cr)
    }

    /// The advance of `s` in DejaVu Sans at `size`, measured on a scratch surface (layout
    /// comes before the real one exists).
    static func measure(_ s: String, size: Double) -> Double {
        guard !s.isEmpty, let surface = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, 1, 1) else { return 0 }
        defer { cairo_surface_destroy(surface) }
        guard let cr = cairo_create(surface) else { return Double(s.count) * size * 0.6 }
        defer { cairo_destroy(cr) }
        cairo_select_font_face(cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL)
        cairo_set_font_size(cr, size)
        var e = cairo_text_extents_t()
        cairo_text_extents(cr, s, &e)
        return e.x_advance
    }

}
