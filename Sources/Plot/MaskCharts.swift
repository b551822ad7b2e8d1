import CCairo
import Foundation

/// The masks' summary charts, drawn once by cairo for both PNG and SVG, at a paper
/// column's width (3.5 in) in points with no text under 8 pt, in Okabe and Ito's colours:
/// active now blue, active earlier but not now orange, never active light grey.
public enum MaskCharts {
    public static let now = (0.0, 0.447, 0.698), earlier = (0.902, 0.624, 0.0), never = (0.93, 0.93, 0.93)
    static let width = 252.0, font = 8.0

    /// Per layer: the share of its weights active now and ever active, as bars.
    public struct DensityBars: Sendable {
        public var title: String
        /// (layer name, fraction active now, fraction ever active)
        public var rows: [(name: String, now: Double, ever: Double)]
        public init(title: String, rows: [(name: String, now: Double, ever: Double)]) { self.title = title; self.rows = rows }

        /// A layer's short label: `blocks.3.mlp.fc1.weight` → `3 mlp.fc1`.
        public static func label(_ name: String) -> String {
            var s = name
            if s.hasPrefix("blocks.") { s = String(s.dropFirst(7)); if let dot = s.firstIndex(of: ".") { s.replaceSubrange(dot ... dot, with: " ") } }
            if s.hasSuffix(".weight") { s = String(s.dropLast(7)) }
            return s
        }

        public func write(to path: String, format: LineChart.Format) throws {
            let titleLines = Figure.wrap(title, width: width - 12, size: font + 1)
            let rowH = 10.0, top = 14 + 11 * Double(titleLines.count) + 12
            let height = top + rowH * Double(rows.count) + 30
            let labels = rows.map { Self.label($0.name) }
            let left = 6 + (labels.map { Figure.measure($0, size: font) }.max() ?? 0) + 4
            let valueW = Figure.measure("100% / 100%", size: font) + 4
            let barW = width - left - valueW - 6
            try Canvas.write(width: width, height: height, scale: LineChart.pngScale, to: path, format: format) { cr in
                cairo_set_source_rgb(cr, 0.1, 0.1, 0.1)
                cairo_set_font_size(cr, font + 1)
                for (k, line) in titleLines.enumerated() { Canvas.text(cr, line, x: width / 2, y: 11 + 11 * Double(k), align: 0.5) }
                cairo_set_font_size(cr, font)
                legend(cr, [(now, "active now"), (earlier, "ever active")], y: top - 6)
                for (i, r) in rows.enumerated() {
                    let y = top + rowH * Double(i)
                    fill(cr, earlier, left, y + 1.5, max(0, r.ever) * barW, rowH - 3)
                    fill(cr, now, left, y + 1.5, max(0, r.now) * barW, rowH - 3)
                    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1)
                    Canvas.text(cr, labels[i], x: left - 4, y: y + 7.5, align: 1)
                    Canvas.text(cr, String(format: "%.0f%% / %.0f%%", r.now * 100, r.ever * 100), x: left + barW + 4, y: y + 7.5, align: 0)
                }
                let bottom = top + rowH * Double(rows.count)
                cairo_set_line_width(cr, 0.5)
                cairo_move_to(cr, left, top); cairo_line_to(cr, left, bottom); cairo_line_to(cr, left + barW, bottom); cairo_stroke(cr)
                for t in stride(from: 0, through: 100, by: 25) {
                    let x = left + barW * Double(t) / 100
                    cairo_move_to(cr, x, bottom); cairo_line_to(cr, x, bottom + 2.5); cairo_stroke(cr)
                    Canvas.text(cr, "\(t)%", x: x, y: bottom + 11, align: 0.5)
                }
                Canvas.text(cr, "share of the layer's weights", x: left + barW / 2, y: bottom + 24, align: 0.5)
            }
        }
    }

    /// Structured runs: blocks × units (heads, like the paper's Fig. A7), each cell kept now,
    /// kept earlier or never, with a dot where the unit was in the initial topology.
    public struct UnitGrid: Sendable {
        public var title: String
        public var unitName: String
        /// [block][unit]
        public var current: [[Bool]], explored: [[Bool]], initial: [[Bool]]
        public init(title: String, unitName: String, current: [[Bool]], explored: [[Bool]], initial: [[Bool]]) {
            self.title = title; self.unitName = unitName; self.current = current; self.explored = explored; self.initial = initial
        }

        /// A cell's state: 2 kept now, 1 kept earlier, 0 never.
        public func state(block: Int, unit: Int) -> Int { current[block][unit] ? 2 : (explored[block][unit] ? 1 : 0) }

        public func write(to path: String, format: LineChart.Format) throws {
            let units = current.first?.count ?? 0
            let left = 6 + Figure.measure("block \(max(0, current.count - 1))", size: font) + 4
            let cell = min(18, (width - left - 8) / Double(max(1, units)))
            let titleLines = Figure.wrap(title, width: width - 12, size: font + 1)
            let top = 14 + 11 * Double(titleLines.count) + 24
            let height = top + cell * Double(current.count) + 26
            try Canvas.write(width: width, height: height, scale: LineChart.pngScale, to: path, format: format) { cr in
                cairo_set_source_rgb(cr, 0.1, 0.1, 0.1)
                cairo_set_font_size(cr, font + 1)
                for (k, line) in titleLines.enumerated() { Canvas.text(cr, line, x: width / 2, y: 11 + 11 * Double(k), align: 0.5) }
                cairo_set_font_size(cr, font)
                legend(cr, [(now, "kept now"), (earlier, "kept earlier"), (never, "never kept")], y: top - 18)
                // The initial-topology mark, after the legend's swatches.
                cairo_set_source_rgb(cr, 0.1, 0.1, 0.1)
                let dotX = width / 2 - Figure.measure("in the initial topology", size: font) / 2 - 4
                cairo_arc(cr, dotX, top - 9, 1.8, 0, 2 * .pi); cairo_fill(cr)
                Canvas.text(cr, "in the initial topology", x: dotX + 5, y: top - 6, align: 0)
                for b in current.indices {
                    let y = top + cell * Double(b)
                    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1)
                    Canvas.text(cr, "block \(b)", x: left - 4, y: y + cell / 2 + 2.8, align: 1)
                    for u in 0 ..< units {
                        let x = left + cell * Double(u)
                        fill(cr, [never, earlier, now][state(block: b, unit: u)], x + 0.5, y + 0.5, cell - 1, cell - 1)
                        if initial[b][u] {
                            cairo_set_source_rgb(cr, 0.1, 0.1, 0.1)
                            cairo_arc(cr, x + cell / 2, y + cell / 2, 1.8, 0, 2 * .pi); cairo_fill(cr)
                        }
                    }
                }
                let bottom = top + cell * Double(current.count)
                cairo_set_source_rgb(cr, 0.1, 0.1, 0.1)
                for u in 0 ..< units where units <= 16 || u % 4 == 0 {
                    Canvas.text(cr, "\(u)", x: left + cell * (Double(u) + 0.5), y: bottom + 10, align: 0.5)
                }
                Canvas.text(cr, unitName, x: left + cell * Double(units) / 2, y: bottom + 21, align: 0.5)
            }
        }
    }

    static func fill(_ cr: OpaquePointer, _ c: (Double, Double, Double), _ x: Double, _ y: Double, _ w: Double, _ h: Double) {
        cairo_set_source_rgb(cr, c.0, c.1, c.2)
        cairo_rectangle(cr, x, y, w, h)
        cairo_fill(cr)
    }

    /// Swatches and labels in one centred row at baseline `y`.
    static func legend(_ cr: OpaquePointer, _ entries: [((Double, Double, Double), String)], y: Double) {
        let widths = entries.map { 12 + Canvas.advance(cr, $0.1) + 8 }
        var x = (width - widths.reduce(0, +)) / 2
        for (e, w) in zip(entries, widths) {
            fill(cr, e.0, x, y - 6.5, 8, 8)
            cairo_set_source_rgb(cr, 0.5, 0.5, 0.5)
            cairo_set_line_width(cr, 0.4)
            cairo_rectangle(cr, x, y - 6.5, 8, 8); cairo_stroke(cr)
            cairo_set_source_rgb(cr, 0.1, 0.1, 0.1)
            Canvas.text(cr, e.1, x: x + 11, y: y, align: 0)
            x += w
        }
    }
}
