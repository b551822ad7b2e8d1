import CCairo
import Foundation

/// A line chart as a paper would print it: title, labelled axes with ticks and a grid, one
/// line per series in a colour-blind-safe palette, and a legend; written as PNG and SVG by
/// cairo (text in DejaVu Sans). It is laid out in points at one column's width (3.5 in),
/// so its smallest text is 8 pt printed at that width; the PNG is that page at 300 dpi.
public struct LineChart: Sendable {
    public struct Series: Sendable {
        public var name: String
        public var points: [(x: Double, y: Double)]
        /// Dashed (e.g. the second quantity of a run drawn beside its first).
        public var dashed: Bool
        /// Which palette colour (nil: the series' place), so a run keeps its colour across
        /// the quantities drawn for it.
        public var colour: Int?
        public init(name: String, points: [(x: Double, y: Double)], dashed: Bool = false, colour: Int? = nil) {
            self.name = name; self.points = points; self.dashed = dashed; self.colour = colour
        }
    }

    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var series: [Series]
    /// A logarithmic y axis (loss, bytes); points at or below zero are left out.
    public var logY = false
    /// The page in points (1/72 in): a paper column wide.
    public var width = 252.0
    public var height = 180.0
    /// Pixels per point of the PNG (300 dpi).
    public static let pngScale = 300.0 / 72
    /// Text sizes in points: ticks and legend, axis labels, title.
    public static let fontSizes = (ticks: 8.0, labels: 8.5, title: 9.5)

    public init(title: String, xLabel: String, yLabel: String, series: [Series], logY: Bool = false) {
        self.title = title; self.xLabel = xLabel; self.yLabel = yLabel; self.series = series; self.logY = logY
    }

    public enum Format: String, Sendable, CaseIterable { case png, svg }

    /// Okabe–Ito: eight colours told apart with every common colour-vision deficiency.
    public static let palette: [(Double, Double, Double)] = [
        (0.000, 0.447, 0.698), (0.835, 0.369, 0.000), (0.000, 0.620, 0.451), (0.800, 0.475, 0.655),
        (0.902, 0.624, 0.000), (0.337, 0.706, 0.914), (0.941, 0.894, 0.259), (0.0, 0.0, 0.0),
    ]

    /// The plotted points of a series: finite, and positive on a log axis.
    func visible(_ s: Series) -> [(x: Double, y: Double)] {
        s.points.filter { $0.x.isFinite && $0.y.isFinite && (!logY || $0.y > 0) }
    }

    public func write(to path: String, format: Format) throws {
        try Canvas.write(width: width, height: height, scale: Self.pngScale, to: path, format: format) { try draw($0) }
    }

    /// The plot area in device units.
    public var plotArea: (left: Double, top: Double, right: Double, bottom: Double) {
        (46, 20, width - 8, height - 30)
    }

    func draw(_ cr: OpaquePointer) throws {
        let area = plotArea

        let all = series.flatMap(visible)
        var (x0, x1) = Self.range(all.map(\.x))
        var (y0, y1) = Self.range(all.map { logY ? log10($0.y) : $0.y })
        if !logY, y0 > 0, y0 < 0.25 * y1 { y0 = 0 }  // counts and rates read better from zero
        let xTicks = Self.ticks(x0, x1), yTicks = logY ? Self.logTicks(y0, y1) : Self.ticks(y0, y1)
        x0 = min(x0, xTicks.first ?? x0); x1 = max(x1, xTicks.last ?? x1)
        y0 = min(y0, yTicks.first ?? y0); y1 = max(y1, yTicks.last ?? y1)
        func px(_ x: Double) -> Double { area.left + (x - x0) / max(x1 - x0, 1e-300) * (area.right - area.left) }
        func py(_ y: Double) -> Double { area.bottom - ((logY ? log10(y) : y) - y0) / max(y1 - y0, 1e-300) * (area.bottom - area.top) }

        // Grid and ticks.
        let f = Self.fontSizes
        cairo_set_line_width(cr, 0.4)
        cairo_set_font_size(cr, f.ticks)
        for t in xTicks {
            let x = px(t)
            cairo_set_source_rgb(cr, 0.88, 0.88, 0.88)
            cairo_move_to(cr, x, area.top); cairo_line_to(cr, x, area.bottom); cairo_stroke(cr)
            cairo_set_source_rgb(cr, 0.15, 0.15, 0.15)
            Canvas.text(cr, Self.label(t), x: x, y: area.bottom + 9, align: 0.5)
        }
        for t in yTicks {
            let value = logY ? pow(10, t) : t
            let y = py(value)
            cairo_set_source_rgb(cr, 0.88, 0.88, 0.88)
            cairo_move_to(cr, area.left, y); cairo_line_to(cr, area.right, y); cairo_stroke(cr)
            cairo_set_source_rgb(cr, 0.15, 0.15, 0.15)
            Canvas.text(cr, Self.label(value), x: area.left - 3, y: y + 2.8, align: 1)
        }
        // Axes box.
        cairo_set_source_rgb(cr, 0.15, 0.15, 0.15)
        cairo_set_line_width(cr, 0.6)
        cairo_rectangle(cr, area.left, area.top, area.right - area.left, area.bottom - area.top)
        cairo_stroke(cr)
        // Labels and title.
        cairo_set_font_size(cr, f.labels)
        Canvas.text(cr, xLabel, x: (area.left + area.right) / 2, y: height - 5, align: 0.5)
        cairo_save(cr)
        cairo_translate(cr, 8.5, (area.top + area.bottom) / 2)
        cairo_rotate(cr, -Double.pi / 2)
        Canvas.text(cr, yLabel + (logY ? " (log scale)" : ""), x: 0, y: 0, align: 0.5)
        cairo_restore(cr)
        cairo_set_font_size(cr, f.title)
        Canvas.text(cr, title, x: (area.left + area.right) / 2, y: 12, align: 0.5)

        // The lines, clipped to the plot area.
        cairo_save(cr)
        cairo_rectangle(cr, area.left, area.top, area.right - area.left, area.bottom - area.top)
        cairo_clip(cr)
        cairo_set_line_width(cr, 1.1)
        cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND)
        for (k, s) in series.enumerated() {
            let points = visible(s)
            let c = Self.palette[(s.colour ?? k) % Self.palette.count]
            cairo_set_source_rgb(cr, c.0, c.1, c.2)
            var dash: [Double] = [3.5, 2]
            if s.dashed { cairo_set_dash(cr, &dash, 2, 0) } else { cairo_set_dash(cr, nil, 0, 0) }
            if points.count == 1 {
                cairo_arc(cr, px(points[0].x), py(points[0].y), 1.8, 0, 2 * .pi); cairo_fill(cr)
                continue
            }
            for (j, p) in points.enumerated() {
                if j == 0 { cairo_move_to(cr, px(p.x), py(p.y)) } else { cairo_line_to(cr, px(p.x), py(p.y)) }
            }
            cairo_stroke(cr)
        }
        cairo_restore(cr)

        // Legend, top right inside the plot, on white.
        if !series.isEmpty {
            cairo_set_font_size(cr, f.ticks)
            var widest = 0.0
            for s in series { widest = max(widest, Canvas.advance(cr, s.name)) }
            let rowH = 10.0, boxW = widest + 24, boxH = rowH * Double(series.count) + 4
            let corners = [(area.right - boxW - 3, area.top + 3), (area.left + 3, area.top + 3),
                           (area.right - boxW - 3, area.bottom - boxH - 3), (area.left + 3, area.bottom - boxH - 3)]
            let lines = series.map { s in visible(s).map { (px($0.x), py($0.y)) } }
            let best = Self.legendCorner(corners, width: boxW, height: boxH, lines: lines)
            let (bx, by) = corners[best]
            cairo_set_source_rgba(cr, 1, 1, 1, 0.9)
            cairo_rectangle(cr, bx, by, boxW, boxH); cairo_fill(cr)
            cairo_set_source_rgb(cr, 0.6, 0.6, 0.6)
            cairo_set_line_width(cr, 0.4)
            cairo_set_dash(cr, nil, 0, 0)
            cairo_rectangle(cr, bx, by, boxW, boxH); cairo_stroke(cr)
            for (k, s) in series.enumerated() {
                let y = by + 2 + rowH * Double(k) + rowH / 2
                let c = Self.palette[(s.colour ?? k) % Self.palette.count]
                cairo_set_source_rgb(cr, c.0, c.1, c.2)
                cairo_set_line_width(cr, 1.3)
                var dash: [Double] = [3.5, 2]
                if s.dashed { cairo_set_dash(cr, &dash, 2, 0) } else { cairo_set_dash(cr, nil, 0, 0) }
                cairo_move_to(cr, bx + 3, y); cairo_line_to(cr, bx + 17, y); cairo_stroke(cr)
                cairo_set_dash(cr, nil, 0, 0)
                cairo_set_source_rgb(cr, 0.1, 0.1, 0.1)
                Canvas.text(cr, s.name, x: bx + 20, y: y + 2.8, align: 0)
            }
        }
        if all.isEmpty {
            cairo_set_font_size(cr, f.labels)
            cairo_set_source_rgb(cr, 0.4, 0.4, 0.4)
            Canvas.text(cr, "no data", x: (area.left + area.right) / 2, y: (area.top + area.bottom) / 2, align: 0.5)
        }
    }


    /// Of the legend's candidate corners (top right first), the one whose box covers the
    /// least of the drawn lines: sampled along each segment, not only at its data points,
    /// since a line of few points still crosses a box between them.
    static func legendCorner(_ corners: [(Double, Double)], width: Double, height: Double, lines: [[(Double, Double)]]) -> Int {
        var samples: [(Double, Double)] = []
        for p in lines {
            for (a, b) in zip(p, p.dropFirst()) {
                for k in 0 ..< 16 {
                    let t = Double(k) / 16
                    samples.append((a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1)))
                }
            }
            if let last = p.last { samples.append(last) }
        }
        let covered = corners.map { c in
            samples.filter { $0.0 >= c.0 && $0.0 <= c.0 + width && $0.1 >= c.1 && $0.1 <= c.1 + height }.count
        }
        return covered.indices.min { covered[$0] < covered[$1] } ?? 0
    }

    /// The data's range, widened when it is a single value (and [0, 1] when there is none).
    static func range(_ v: [Double]) -> (Double, Double) {
        guard let lo = v.min(), let hi = v.max() else { return (0, 1) }
        if hi > lo { return (lo, hi) }
        let pad = lo == 0 ? 1 : abs(lo) * 0.1
        return (lo - pad, hi + pad)
    }

    /// Round ticks (1, 2 or 5 × 10^k apart), about six, covering [lo, hi].
    static func ticks(_ lo: Double, _ hi: Double) -> [Double] {
        let span = max(hi - lo, 1e-300)
        let raw = span / 6, mag = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 5, 10].map { $0 * mag }.first { $0 >= raw } ?? 10 * mag
        let first = floor(lo / step) * step
        var out: [Double] = []
        var t = first
        while t <= hi + step * 0.5 && out.count < 50 {
            out.append(abs(t) < step * 1e-9 ? 0 : t)
            t += step
        }
        return out
    }

    /// Ticks on a log10 axis (values are exponents): every decade, or every few; over a
    /// short range 1, 2 and 5 of each decade, or 1 to 9, or round values, so that at least
    /// three ticks label the data.
    static func logTicks(_ lo: Double, _ hi: Double) -> [Double] {
        for mantissas in [[1.0, 2, 5], Array(stride(from: 1.0, through: 9, by: 1))] {
            // From the last below the data to the first above it, so the data fills the axis.
            let candidates = stride(from: floor(lo) - 1, through: ceil(hi) + 1, by: 1).flatMap { k in mantissas.map { k + log10($0) } }
            let start = candidates.last { $0 <= lo + 1e-12 } ?? floor(lo)
            let end = candidates.first { $0 >= hi - 1e-12 } ?? ceil(hi)
            let fine = candidates.filter { $0 >= start - 1e-12 && $0 <= end + 1e-12 }
            if fine.count >= 4 && fine.count <= 8 { return fine }
            if fine.count > 8 { break }
        }
        if ceil(hi) - floor(lo) <= 1 {
            // Within one decade or two neighbours: round values of the data's own range.
            let values = ticks(pow(10, lo), pow(10, hi)).filter { $0 > 0 }
            if values.count >= 3 { return values.map(log10) }
        }
        let a = floor(lo), b = ceil(hi)
        let every = max(1, ((b - a) / 6).rounded(.up))
        return stride(from: a, through: b, by: every).map { $0 }
    }

    /// A tick label: short, in SI-like form for large and small numbers.
    static func label(_ v: Double) -> String {
        let a = abs(v)
        if a == 0 { return "0" }
        if a >= 1e9 { return trim(String(format: "%.3g", v / 1e9)) + "G" }
        if a >= 1e6 { return trim(String(format: "%.3g", v / 1e6)) + "M" }
        if a >= 1e4 { return trim(String(format: "%.3g", v / 1e3)) + "k" }
        if a >= 0.01 { return trim(String(format: "%.4g", v)) }
        return String(format: "%.0e", v)
    }

    static func trim(_ s: String) -> String { s }
}
