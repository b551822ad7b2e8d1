import CCairo
import Foundation

/// A line chart as a paper would print it: title, labelled axes with ticks and a grid, one
/// line per series in a colour-blind-safe palette, and a legend; written as PNG and SVG by
/// cairo (text in DejaVu Sans).
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
    public var width = 900
    public var height = 540

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
        try Canvas.write(width: width, height: height, to: path, format: format) { try draw($0) }
    }

    /// The plot area in device units.
    public var plotArea: (left: Double, top: Double, right: Double, bottom: Double) {
        (82, 52, Double(width) - 24, Double(height) - 64)
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
        cairo_set_line_width(cr, 1)
        cairo_set_font_size(cr, 13)
        for t in xTicks {
            let x = px(t)
            cairo_set_source_rgb(cr, 0.88, 0.88, 0.88)
            cairo_move_to(cr, x, area.top); cairo_line_to(cr, x, area.bottom); cairo_stroke(cr)
            cairo_set_source_rgb(cr, 0.15, 0.15, 0.15)
            Canvas.text(cr, Self.label(t), x: x, y: area.bottom + 18, align: 0.5)
        }
        for t in yTicks {
            let value = logY ? pow(10, t) : t
            let y = py(value)
            cairo_set_source_rgb(cr, 0.88, 0.88, 0.88)
            cairo_move_to(cr, area.left, y); cairo_line_to(cr, area.right, y); cairo_stroke(cr)
            cairo_set_source_rgb(cr, 0.15, 0.15, 0.15)
            Canvas.text(cr, Self.label(value), x: area.left - 8, y: y + 4.5, align: 1)
        }
        // Axes box.
        cairo_set_source_rgb(cr, 0.15, 0.15, 0.15)
        cairo_rectangle(cr, area.left, area.top, area.right - area.left, area.bottom - area.top)
        cairo_stroke(cr)
        // Labels and title.
        cairo_set_font_size(cr, 14)
        Canvas.text(cr, xLabel, x: (area.left + area.right) / 2, y: Double(height) - 18, align: 0.5)
        cairo_save(cr)
        cairo_translate(cr, 22, (area.top + area.bottom) / 2)
        cairo_rotate(cr, -Double.pi / 2)
        Canvas.text(cr, yLabel + (logY ? " (log scale)" : ""), x: 0, y: 0, align: 0.5)
        cairo_restore(cr)
        cairo_set_font_size(cr, 17)
        Canvas.text(cr, title, x: (area.left + area.right) / 2, y: 32, align: 0.5)

        // The lines, clipped to the plot area.
        cairo_save(cr)
        cairo_rectangle(cr, area.left, area.top, area.right - area.left, area.bottom - area.top)
        cairo_clip(cr)
        cairo_set_line_width(cr, 2)
        cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND)
        for (k, s) in series.enumerated() {
            let points = visible(s)
            let c = Self.palette[(s.colour ?? k) % Self.palette.count]
            cairo_set_source_rgb(cr, c.0, c.1, c.2)
            var dash: [Double] = [7, 4]
            if s.dashed { cairo_set_dash(cr, &dash, 2, 0) } else { cairo_set_dash(cr, nil, 0, 0) }
            if points.count == 1 {
                cairo_arc(cr, px(points[0].x), py(points[0].y), 3.5, 0, 2 * .pi); cairo_fill(cr)
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
            cairo_set_font_size(cr, 13)
            var widest = 0.0
            for s in series { widest = max(widest, Canvas.advance(cr, s.name)) }
            let rowH = 20.0, boxW = widest + 48, boxH = rowH * Double(series.count) + 10
            // The corner whose box covers the fewest drawn points (top right on a tie).
            let corners = [(area.right - boxW - 10, area.top + 10), (area.left + 10, area.top + 10),
                           (area.right - boxW - 10, area.bottom - boxH - 10), (area.left + 10, area.bottom - boxH - 10)]
            let device = series.flatMap(visible).map { (px($0.x), py($0.y)) }
            let covered = corners.map { c in device.filter { $0.0 >= c.0 && $0.0 <= c.0 + boxW && $0.1 >= c.1 && $0.1 <= c.1 + boxH }.count }
            let best = covered.indices.min { covered[$0] < covered[$1] } ?? 0
            let (bx, by) = corners[best]
            cairo_set_source_rgba(cr, 1, 1, 1, 0.9)
            cairo_rectangle(cr, bx, by, boxW, boxH); cairo_fill(cr)
            cairo_set_source_rgb(cr, 0.6, 0.6, 0.6)
            cairo_set_line_width(cr, 1)
            cairo_set_dash(cr, nil, 0, 0)
            cairo_rectangle(cr, bx, by, boxW, boxH); cairo_stroke(cr)
            for (k, s) in series.enumerated() {
                let y = by + 5 + rowH * Double(k) + rowH / 2
                let c = Self.palette[(s.colour ?? k) % Self.palette.count]
                cairo_set_source_rgb(cr, c.0, c.1, c.2)
                cairo_set_line_width(cr, 2.5)
                var dash: [Double] = [7, 4]
                if s.dashed { cairo_set_dash(cr, &dash, 2, 0) } else { cairo_set_dash(cr, nil, 0, 0) }
                cairo_move_to(cr, bx + 8, y); cairo_line_to(cr, bx + 34, y); cairo_stroke(cr)
                cairo_set_dash(cr, nil, 0, 0)
                cairo_set_source_rgb(cr, 0.1, 0.1, 0.1)
                Canvas.text(cr, s.name, x: bx + 40, y: y + 4.5, align: 0)
            }
        }
        if all.isEmpty {
            cairo_set_font_size(cr, 15)
            cairo_set_source_rgb(cr, 0.4, 0.4, 0.4)
            Canvas.text(cr, "no data", x: (area.left + area.right) / 2, y: (area.top + area.bottom) / 2, align: 0.5)
        }
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

    /// Ticks on a log10 axis (values are exponents): every decade, or every few.
    static func logTicks(_ lo: Double, _ hi: Double) -> [Double] {
        // Over a short range, 1, 2 and 5 of each decade, from the last below the data to
        // the first above it, so the data fills the axis.
        let candidates = stride(from: floor(lo) - 1, through: ceil(hi) + 1, by: 1).flatMap { k in [k, k + log10(2.0), k + log10(5.0)] }
        let start = candidates.last { $0 <= lo + 1e-12 } ?? floor(lo)
        let end = candidates.first { $0 >= hi - 1e-12 } ?? ceil(hi)
        let fine = candidates.filter { $0 >= start - 1e-12 && $0 <= end + 1e-12 }
        if fine.count <= 8 { return fine }
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
