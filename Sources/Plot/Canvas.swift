import CCairo

/// What the charts and figures share: a PNG or SVG surface of a size, a context on it
/// handed to the drawing, and text placed by its alignment (DejaVu Sans throughout).
enum Canvas {
    /// `width` × `height` in drawing units: points in an SVG, `scale` pixels each in a PNG.
    static func write(width: Double, height: Double, scale: Double = 1, to path: String, format: LineChart.Format,
                      draw: (OpaquePointer) throws -> Void) throws {
        switch format {
        case .png:
            guard let surface = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, Int32((width * scale).rounded()), Int32((height * scale).rounded())) else {
                throw CairoError(call: "cairo_image_surface_create", status: "no surface")
            }
            defer { cairo_surface_destroy(surface) }
            try drawing(on: surface, scale: scale, draw)
            try check("cairo_surface_write_to_png(\(path))", cairo_surface_write_to_png(surface, path))
        case .svg:
            guard let surface = cairo_svg_surface_create(path, width, height) else {
                throw CairoError(call: "cairo_svg_surface_create(\(path))", status: "no surface")
            }
            try drawing(on: surface, scale: 1, draw)
            cairo_surface_finish(surface)
            let status = cairo_surface_status(surface)
            cairo_surface_destroy(surface)
            try check("cairo_svg_surface_create(\(path))", status)
        }
    }

    /// A white page, the font chosen, the drawing, and cairo's first error if any.
    static func drawing(on surface: OpaquePointer, scale: Double, _ draw: (OpaquePointer) throws -> Void) throws {
        guard let cr = cairo_create(surface) else { throw CairoError(call: "cairo_create", status: "no context") }
        defer { cairo_destroy(cr) }
        cairo_set_source_rgb(cr, 1, 1, 1)
        cairo_paint(cr)
        cairo_scale(cr, scale, scale)
        cairo_select_font_face(cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL)
        try draw(cr)
        try check("drawing", cairo_status(cr))
    }

    /// Text with its left (0), centre (0.5) or right (1) at x, baseline at y.
    static func text(_ cr: OpaquePointer, _ s: String, x: Double, y: Double, align: Double) {
        cairo_move_to(cr, x - align * advance(cr, s), y)
        cairo_show_text(cr, s)
    }

    static func advance(_ cr: OpaquePointer, _ s: String) -> Double {
        var e = cairo_text_extents_t()
        cairo_text_extents(cr, s, &e)
        return e.x_advance
    }
}
