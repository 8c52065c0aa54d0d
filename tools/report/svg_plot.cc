#include "tools/report/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tools/report/html.h"

namespace rlhf::report {
namespace {

// Colour-blind-safe palette (Okabe and Ito).
constexpr const char* kColors[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                   "#E69F00", "#56B4E9", "#000000", "#F0E442"};

std::string Px(double v) { return absl::StrFormat("%.1f", v); }

// The finite points of a series, thinned to at most about `max_points`.
std::vector<std::pair<double, double>> PlottablePoints(const PlotSeries& series, size_t max_points) {
  std::vector<std::pair<double, double>> finite;
  for (const auto& [x, y] : series.points) {
    if (std::isfinite(x) && std::isfinite(y)) finite.emplace_back(x, y);
  }
  if (max_points < 2 || finite.size() <= max_points) return finite;
  std::vector<std::pair<double, double>> thinned;
  const double stride = static_cast<double>(finite.size() - 1) / static_cast<double>(max_points - 1);
  for (size_t i = 0; i < max_points; ++i) {
    thinned.push_back(finite[static_cast<size_t>(std::llround(static_cast<double>(i) * stride))]);
  }
  thinned.back() = finite.back();
  return thinned;
}

// Widens a degenerate range so that it can be drawn.
void Widen(double& lo, double& hi) {
  if (hi > lo) return;
  const double pad = lo == 0 ? 1.0 : std::abs(lo) * 0.1;
  lo -= pad;
  hi += pad;
}

std::string SvgOpen(int width, int height, absl::string_view label) {
  return absl::StrCat("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"", width, "\" height=\"", height,
                      "\" viewBox=\"0 0 ", width, " ", height, "\" role=\"img\" aria-label=\"", EscapeHtml(label),
                      "\" font-family=\"sans-serif\" font-size=\"11\">");
}

}  // namespace

std::vector<double> NiceTicks(double lo, double hi, int target) {
  if (!(hi > lo) || !std::isfinite(lo) || !std::isfinite(hi)) return {lo};
  const double raw = (hi - lo) / std::max(1, target - 1);
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = magnitude * 10;
  for (const double m : {1.0, 2.0, 2.5, 5.0}) {
    if (m * magnitude >= raw * (1 - 1e-9)) {
      step = m * magnitude;
      break;
    }
  }
  std::vector<double> ticks;
  const double first = std::floor(lo / step + 1e-9) * step;
  for (int k = 0; k <= 4 * std::max(1, target) + 2; ++k) {
    double t = first + k * step;
    if (std::abs(t) < step * 1e-9) t = 0.0;
    ticks.push_back(t);
    if (t >= hi - step * 1e-9) break;
  }
  return ticks;
}

std::string RenderLinePlot(const std::vector<PlotSeries>& series, const PlotOptions& options) {
  const int width = options.width;
  const int height = options.height;
  const bool legend = series.size() > 1;
  const double left = 58;
  const double right = 14;
  const double top = legend ? 44 : 28;
  const double bottom = 36;
  const double plot_w = width - left - right;
  const double plot_h = height - top - bottom;

  std::vector<std::vector<std::pair<double, double>>> points;
  double x_lo = std::numeric_limits<double>::infinity();
  double x_hi = -x_lo;
  double y_lo = x_lo;
  double y_hi = -x_lo;
  for (const PlotSeries& s : series) {
    points.push_back(PlottablePoints(s, options.max_points_per_series));
    for (const auto& [x, y] : points.back()) {
      x_lo = std::min(x_lo, x);
      x_hi = std::max(x_hi, x);
      y_lo = std::min(y_lo, y);
      y_hi = std::max(y_hi, y);
    }
  }

  std::string svg = SvgOpen(width, height, options.title);
  absl::StrAppend(&svg, "<text x=\"", Px(left), "\" y=\"16\" font-size=\"13\" font-weight=\"bold\">",
                  EscapeHtml(options.title), "</text>");
  if (!std::isfinite(x_lo)) {
    absl::StrAppend(&svg, "<text x=\"", Px(left + plot_w / 2), "\" y=\"", Px(top + plot_h / 2),
                    "\" text-anchor=\"middle\" fill=\"#666\">no data</text></svg>");
    return svg;
  }
  if (x_hi == x_lo) {  // one step: a unit-wide axis around it, not below 0 for the usual non-negative steps
    x_lo = x_lo >= 0 ? std::max(0.0, x_lo - 1) : x_lo - 1;
    x_hi += 1;
  }
  Widen(y_lo, y_hi);
  const std::vector<double> x_ticks = NiceTicks(x_lo, x_hi);
  const std::vector<double> y_ticks = NiceTicks(y_lo, y_hi);
  const double x0 = std::min(x_lo, x_ticks.front());
  const double x1 = std::max(x_hi, x_ticks.back());
  const double y0 = std::min(y_lo, y_ticks.front());
  const double y1 = std::max(y_hi, y_ticks.back());
  const auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * plot_w; };
  const auto py = [&](double y) { return top + (1.0 - (y - y0) / (y1 - y0)) * plot_h; };

  // Grid, ticks and axes.
  for (const double t : y_ticks) {
    absl::StrAppend(&svg, "<line x1=\"", Px(left), "\" y1=\"", Px(py(t)), "\" x2=\"", Px(left + plot_w), "\" y2=\"",
                    Px(py(t)), "\" stroke=\"#e4e4e4\"/>", "<text x=\"", Px(left - 6), "\" y=\"", Px(py(t) + 4),
                    "\" text-anchor=\"end\" fill=\"#444\">", FormatNumber(t), "</text>");
  }
  for (const double t : x_ticks) {
    absl::StrAppend(&svg, "<line x1=\"", Px(px(t)), "\" y1=\"", Px(top), "\" x2=\"", Px(px(t)), "\" y2=\"",
                    Px(top + plot_h), "\" stroke=\"#f0f0f0\"/>", "<text x=\"", Px(px(t)), "\" y=\"",
                    Px(top + plot_h + 14), "\" text-anchor=\"middle\" fill=\"#444\">", FormatNumber(t), "</text>");
  }
  absl::StrAppend(&svg, "<rect x=\"", Px(left), "\" y=\"", Px(top), "\" width=\"", Px(plot_w), "\" height=\"",
                  Px(plot_h), "\" fill=\"none\" stroke=\"#888\"/>");
  absl::StrAppend(&svg, "<text x=\"", Px(left + plot_w / 2), "\" y=\"", Px(height - 6),
                  "\" text-anchor=\"middle\" fill=\"#444\">", EscapeHtml(options.x_label), "</text>");

  // Series and legend.
  double legend_x = left;
  for (size_t i = 0; i < series.size(); ++i) {
    const char* color = kColors[i % std::size(kColors)];
    const std::vector<std::pair<double, double>>& p = points[i];
    if (p.size() == 1) {
      absl::StrAppend(&svg, "<circle cx=\"", Px(px(p[0].first)), "\" cy=\"", Px(py(p[0].second)), "\" r=\"3\" fill=\"",
                      color, "\"><title>", EscapeHtml(series[i].label), ": ", FormatNumber(p[0].second),
                      "</title></circle>");
    } else if (p.size() > 1) {
      absl::StrAppend(&svg, "<polyline fill=\"none\" stroke=\"", color, "\" stroke-width=\"1.5\" points=\"");
      for (size_t j = 0; j < p.size(); ++j) {
        absl::StrAppend(&svg, j == 0 ? "" : " ", Px(px(p[j].first)), ",", Px(py(p[j].second)));
      }
      absl::StrAppend(&svg, "\"><title>", EscapeHtml(series[i].label), "</title></polyline>");
    }
    if (legend) {
      absl::StrAppend(&svg, "<line x1=\"", Px(legend_x), "\" y1=\"30\" x2=\"", Px(legend_x + 16),
                      "\" y2=\"30\" stroke=\"", color, "\" stroke-width=\"2\"/><text x=\"", Px(legend_x + 20),
                      "\" y=\"34\" fill=\"#222\">", EscapeHtml(series[i].label), "</text>");
      legend_x += 28 + 6.5 * static_cast<double>(series[i].label.size());
    }
  }
  svg += "</svg>";
  return svg;
}

std::string RenderIntervalChart(const std::vector<IntervalRow>& rows, double reference, int width) {
  const double left = 150;
  const double right = 20;
  const double row_h = 30;
  const double top = 10;
  const int height = static_cast<int>(top + row_h * static_cast<double>(rows.size()) + 26);
  const double plot_w = width - left - right;
  const auto px = [&](double v) { return left + std::clamp(v, 0.0, 1.0) * plot_w; };
  const double axis_y = top + row_h * static_cast<double>(rows.size());

  std::string svg = SvgOpen(width, height, "win-rate with confidence interval");
  for (const double t : {0.0, 0.25, 0.5, 0.75, 1.0}) {
    absl::StrAppend(&svg, "<line x1=\"", Px(px(t)), "\" y1=\"", Px(top), "\" x2=\"", Px(px(t)), "\" y2=\"", Px(axis_y),
                    "\" stroke=\"#eee\"/><text x=\"", Px(px(t)), "\" y=\"", Px(axis_y + 14),
                    "\" text-anchor=\"middle\" fill=\"#444\">", FormatNumber(t), "</text>");
  }
  absl::StrAppend(&svg, "<line x1=\"", Px(px(reference)), "\" y1=\"", Px(top), "\" x2=\"", Px(px(reference)),
                  "\" y2=\"", Px(axis_y), "\" stroke=\"#999\" stroke-dasharray=\"4 3\"/>");
  for (size_t i = 0; i < rows.size(); ++i) {
    const IntervalRow& row = rows[i];
    const double y = top + row_h * (static_cast<double>(i) + 0.5);
    const char* color = row.low > reference ? "#009E73" : (row.high < reference ? "#D55E00" : "#0072B2");
    absl::StrAppend(&svg, "<text x=\"", Px(left - 8), "\" y=\"", Px(y + 4), "\" text-anchor=\"end\" fill=\"#222\">",
                    EscapeHtml(row.label), "</text>");
    absl::StrAppend(&svg, "<line x1=\"", Px(px(row.low)), "\" y1=\"", Px(y), "\" x2=\"", Px(px(row.high)), "\" y2=\"",
                    Px(y), "\" stroke=\"", color, "\" stroke-width=\"3\"/>");
    for (const double end : {row.low, row.high}) {
      absl::StrAppend(&svg, "<line x1=\"", Px(px(end)), "\" y1=\"", Px(y - 6), "\" x2=\"", Px(px(end)), "\" y2=\"",
                      Px(y + 6), "\" stroke=\"", color, "\" stroke-width=\"2\"/>");
    }
    absl::StrAppend(&svg, "<circle cx=\"", Px(px(row.value)), "\" cy=\"", Px(y), "\" r=\"4.5\" fill=\"", color,
                    "\"><title>", EscapeHtml(row.label), ": ", FormatNumber(row.value), " [", FormatNumber(row.low),
                    ", ", FormatNumber(row.high), "]</title></circle>");
  }
  svg += "</svg>";
  return svg;
}

}  // namespace rlhf::report
