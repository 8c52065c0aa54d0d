// Inline SVG charts for the run report: line plots of metrics against steps, and win-rate intervals. The output is
// a self-contained <svg> element (no script, no external style or font).
#ifndef RLHF_TOOLS_REPORT_SVG_PLOT_H_
#define RLHF_TOOLS_REPORT_SVG_PLOT_H_

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace rlhf::report {

struct PlotSeries {
  std::string label;
  std::vector<std::pair<double, double>> points;  // (x, y); non-finite values are left out of the plot
};

struct PlotOptions {
  std::string title;
  std::string x_label = "step";
  int width = 520;  // pixels
  int height = 260;
  // Series with more points are thinned to about this many (evenly spaced, the last point always kept).
  size_t max_points_per_series = 800;
};

// A line plot with axes, ticks at round numbers, a grid and a legend (when more than one series). A series with
// one point is drawn as a dot. Returns a plot that says "no data" when no series has a finite point.
std::string RenderLinePlot(const std::vector<PlotSeries>& series, const PlotOptions& options);

// One win-rate with its confidence interval.
struct IntervalRow {
  std::string label;
  double value = 0;
  double low = 0;
  double high = 0;
};

// Horizontal intervals on a [0, 1] axis with a dashed line at `reference` (0.5: no preference).
std::string RenderIntervalChart(const std::vector<IntervalRow>& rows, double reference = 0.5, int width = 520);

// Round tick values covering [lo, hi] (about `target` of them, steps of 1, 2, 2.5 or 5 times a power of ten).
// lo < hi, both finite.
std::vector<double> NiceTicks(double lo, double hi, int target = 5);

}  // namespace rlhf::report

#endif  // RLHF_TOOLS_REPORT_SVG_PLOT_H_
