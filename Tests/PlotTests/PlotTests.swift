import Foundation
import Testing
@testable import Plot

@Suite("plot")
struct PlotTests {
    /// Ticks are round (1, 2 or 5 × 10^k apart), cover the data, and number about six.
    @Test func ticksAreRoundAndCoverTheData() {
        for (lo, hi) in [(0.0, 4690.0), (0.12, 0.87), (-3.0, 250.0), (1e-5, 3e-4), (5.0, 5.0000001)] {
            let t = LineChart.ticks(lo, hi)
            #expect(t.count >= 3 && t.count <= 12, "\(lo)...\(hi): \(t)")
            #expect(t.first! <= lo + 1e-12 && t.last! >= hi - (t[1] - t[0]) * 0.5, "\(lo)...\(hi): \(t)")
            let step = t[1] - t[0]
            let mantissa = step / pow(10, floor(log10(step)))
            #expect([1, 2, 5, 10].contains { abs(mantissa - Double($0)) < 1e-6 }, "\(step)")
        }
        #expect(LineChart.label(4_690) == "4690" && LineChart.label(25_000) == "25k" && LineChart.label(2.5e6) == "2.5M")
    }

    /// A log axis has at least three labelled ticks within or around the data, also over a
    /// narrow range (2.6M to 2.9M bytes once had only "2M" and "5M").
    @Test func logTicksLabelNarrowRanges() {
        for (lo, hi) in [(2.6e6, 2.9e6), (0.4, 2.3), (1.7, 2.3), (1e-4, 1e-3), (0.01, 500.0), (3.0, 3.2)] {
            let t = LineChart.logTicks(log10(lo), log10(hi))
            let inside = t.filter { $0 >= log10(lo) - 1e-9 && $0 <= log10(hi) + 1e-9 }
            #expect(t.count >= 3 && t.count <= 10 && (inside.count >= 2 || t.count >= 4), "\(lo)...\(hi): \(t.map { pow(10, $0) })")
            #expect(t.first! <= log10(lo) + 1e-9 && t.last! >= log10(hi) - 1e-9, "\(lo)...\(hi): \(t.map { pow(10, $0) })")
            #expect(Set(t.map { LineChart.label(pow(10, $0)) }).count == t.count, "labels repeat: \(t.map { LineChart.label(pow(10, $0)) })")
        }
    }

    /// A chart is written as a PNG of its size and an SVG, each series drawn in its own
    /// colour inside the plot area; a log axis leaves out points at or below zero; a chart
    /// without data still gets its frame and says so.
    @Test func chartsAreWrittenWithEachSeriesDrawn() throws {
        let dir = NSTemporaryDirectory() + "plot-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func decay(_ tau: Double, _ floor: Double) -> [(x: Double, y: Double)] {
            (0 ..< 50).map { i -> (x: Double, y: Double) in
                let t = Double(i)
                return (x: t * 10, y: 2.3 * exp(-t / tau) + floor)
            }
        }
        let a = LineChart.Series(name: "run a", points: decay(15, 0.3))
        let b = LineChart.Series(name: "run b", points: decay(25, 0.4) + [(x: 600, y: 0), (x: 610, y: .nan)])
        let chart = LineChart(title: "training loss", xLabel: "step", yLabel: "loss", series: [a, b], logY: true)
        try chart.write(to: "\(dir)/loss.png", format: .png)
        try chart.write(to: "\(dir)/loss.svg", format: .svg)
        let png = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/loss.png"))
        #expect(png.prefix(8) == Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]))
        // IHDR: width and height, big-endian, at bytes 16..<24.
        let w = png[16 ..< 20].reduce(0) { $0 << 8 | Int($1) }, h = png[20 ..< 24].reduce(0) { $0 << 8 | Int($1) }
        // The page is a paper column (3.5 in) in points, the PNG that page at 300 dpi, and
        // no text is under 8 pt.
        #expect(chart.width == 3.5 * 72 && w == Int((chart.width * LineChart.pngScale).rounded()) && h == Int((chart.height * LineChart.pngScale).rounded()))
        let f = LineChart.fontSizes
        #expect(min(f.ticks, f.labels, f.title) >= 8)
        let svg = try String(contentsOfFile: "\(dir)/loss.svg", encoding: .utf8)
        #expect(svg.contains("<svg") && svg.contains("</svg>"))
        // Both series' colours appear in the SVG (cairo writes rgb(r%, g%, b%) or 0-255).
        let colours = svgColours(svg)
        for k in 0 ..< 2 {
            let c = LineChart.palette[k]
            #expect(colours.contains { abs($0.0 - c.0) < 0.01 && abs($0.1 - c.1) < 0.01 && abs($0.2 - c.2) < 0.01 }, "series \(k): \(c) not in \(colours.prefix(10))")
        }
        #expect(chart.visible(b).count == 50)
        let empty = LineChart(title: "nothing", xLabel: "step", yLabel: "bytes", series: [])
        try empty.write(to: "\(dir)/empty.png", format: .png)
        #expect(FileManager.default.fileExists(atPath: "\(dir)/empty.png"))
        #expect(throws: CairoError.self) { try chart.write(to: "\(dir)/no/such/dir/x.png", format: .png) }
    }

    /// Every rgb(...) colour in an SVG, as fractions.
    func svgColours(_ svg: String) -> [(Double, Double, Double)] {
        var out: [(Double, Double, Double)] = []
        var rest = Substring(svg)
        while let open = rest.range(of: "rgb(") {
            rest = rest[open.upperBound...]
            guard let close = rest.firstIndex(of: ")") else { break }
            let parts = rest[..<close].split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            let v = parts.compactMap { p -> Double? in
                p.hasSuffix("%") ? Double(p.dropLast()).map { $0 / 100 } : Double(p).map { $0 / 255 }
            }
            if v.count == 3 { out.append((v[0], v[1], v[2])) }
            rest = rest[close...]
        }
        return out
    }

    /// Small pictures are enlarged by whole pixels: a 6 × 6 grid of heads to about 160 px a
    /// side, a 6-row strip of 384 neurons to rows of at least 10 px without widening it;
    /// captions fit their cells; the PNG is the size the layout says.
    @Test func figuresEnlargeSmallPicturesAndFitTheirCaptions() throws {
        func panel(_ w: Int, _ h: Int, _ caption: String) -> Figure.Panel {
            Figure.Panel(caption: caption, width: w, height: h, rgb: [UInt8](repeating: 128, count: w * h * 3))
        }
        let f = Figure(title: "t", panels: [panel(6, 6, "heads"), panel(384, 6, "explored 100.0%")], columns: 2,
                       xLabel: "x", yLabel: "y", legend: [.init(colour: (1, 0, 0), label: "red")])
        let heads = f.displaySize(f.panels[0]), strip = f.displaySize(f.panels[1])
        #expect(heads.width == heads.height && heads.width >= 150 && heads.width <= 160)
        #expect(strip.width == 384 && strip.height >= 60 && strip.sx == 1)
        #expect(Double(f.layout.cellW) >= Figure.measure(f.panels[1].caption, size: 12))
        let path = NSTemporaryDirectory() + "figure-\(UUID().uuidString).png"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try f.write(to: path, format: .png)
        let png = try Data(contentsOf: URL(fileURLWithPath: path))
        let w = png[16 ..< 20].reduce(0) { $0 << 8 | Int($1) }, h = png[20 ..< 24].reduce(0) { $0 << 8 | Int($1) }
        #expect(w == f.pixelSize.width && h == f.pixelSize.height)
        // Its smallest text is 8 pt or more when the figure is printed a column (3.5 in) wide,
        // also as `svite masks` draws a layer: three panels, a long title and axis label,
        // four legend entries (they wrap).
        #expect(f.smallestText / Double(f.layout.width) * 3.5 * 72 >= 8, "\(f.smallestText) units on \(f.layout.width)")
        let masks = Figure(title: "blocks.0.attn.qkv.weight (288 × 96), default at step 2345", panels: [panel(96, 288, "initial 50.0%"),
                           panel(96, 288, "now 50.0%"), panel(96, 288, "explored 97.7%")], columns: 3,
                           xLabel: "input features (blocks of weights: deeper = more of them)", yLabel: "output features",
                           legend: [.init(colour: (0, 0, 0), label: "active at the start"), .init(colour: (0, 0, 1), label: "active now"),
                                    .init(colour: (1, 0.5, 0), label: "active earlier, not now"), .init(colour: (1, 1, 1), label: "inactive (never)")])
        #expect(masks.smallestText / Double(masks.layout.width) * 3.5 * 72 >= 8, "\(masks.smallestText) units on \(masks.layout.width)")
        #expect(masks.legendLayout(width: Double(masks.layout.width), textScale: masks.layout.textScale).count >= 2)
    }
}

extension PlotTests {
    /// The masks' charts: both formats from one drawing, the heads grid's cells in the
    /// state the selection says, and short layer labels.
    @Test func maskChartsAreWrittenInBothFormats() throws {
        let dir = NSTemporaryDirectory() + "maskcharts-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bars = MaskCharts.DensityBars(title: "default, step 60: 50.0% sparse, 77.7% of prunable weights explored",
                                          rows: [("blocks.0.attn.qkv.weight", 0.5, 0.777), ("blocks.11.mlp.fc2.weight", 0.125, 0.25)])
        #expect(MaskCharts.DensityBars.label("blocks.11.mlp.fc2.weight") == "11 mlp.fc2")
        let grid = MaskCharts.UnitGrid(title: "t", unitName: "head", current: [[true, false], [false, false]],
                                       explored: [[true, true], [false, false]], initial: [[false, true], [false, false]])
        #expect(grid.state(block: 0, unit: 0) == 2 && grid.state(block: 0, unit: 1) == 1 && grid.state(block: 1, unit: 0) == 0)
        for f in LineChart.Format.allCases {
            try bars.write(to: "\(dir)/density.\(f.rawValue)", format: f)
            try grid.write(to: "\(dir)/heads.\(f.rawValue)", format: f)
        }
        let png = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/density.png"))
        let w = png[16 ..< 20].reduce(0) { $0 << 8 | Int($1) }
        #expect(w == Int((252 * LineChart.pngScale).rounded()), "a column wide at 300 dpi: \(w)")
        let svg = try String(contentsOfFile: "\(dir)/heads.svg", encoding: .utf8)
        let colours = svgColours(svg)
        for c in [MaskCharts.now, MaskCharts.earlier] {
            #expect(colours.contains { abs($0.0 - c.0) < 0.01 && abs($0.1 - c.1) < 0.01 && abs($0.2 - c.2) < 0.01 }, "\(c)")
        }
    }
}

/// Where a line chart's legend goes: the corner its lines cross least, counting the lines
/// between their data points too.
@Suite("line chart legend")
struct LegendCornerTests {
    // Boxes of 40×20 in the four corners of a 200×100 area (y grows downwards), top right first.
    let corners = [(157.0, 3.0), (3.0, 3.0), (157.0, 77.0), (3.0, 77.0)]

    @Test func aLineThroughACornerBetweenItsPointsMovesTheLegend() {
        // Two points, both outside every box: from the middle left to past the top right
        // corner. Its segment crosses the top-right box; only sampling along it sees that.
        let line = [(100.0, 50.0), (200.0, 0.0)]
        let corner = LineChart.legendCorner(corners, width: 40, height: 20, lines: [line])
        #expect(corner != 0, "the top-right box lies on the line")
    }

    @Test func anEmptyTopRightStaysTheChoice() {
        let line = [(0.0, 90.0), (60.0, 95.0)]  // along the bottom left
        #expect(LineChart.legendCorner(corners, width: 40, height: 20, lines: [line]) == 0)
    }
}
