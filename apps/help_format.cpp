#include "help_format.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <sstream>

namespace lockstep::apps {

namespace {
constexpr size_t kNameColumn = 32;  // "  --checkpoint-best-metric TEXT" and a space
}

int terminal_width() {
  int w = 0;
  if (const char* c = std::getenv("COLUMNS")) w = std::atoi(c);
  winsize ws{};
  if (w <= 0 && ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0) w = ws.ws_col;
  if (w <= 0) w = 80;
  return std::max(w, 40);
}

std::string wrap_text(const std::string& text, size_t width) {
  std::string out;
  std::istringstream lines(text);
  std::string line;
  bool first = true;
  while (std::getline(lines, line)) {
    if (!first) out += '\n';
    first = false;
    // An indented line (a usage example) goes on indented further.
    const size_t indent =
        line.find_first_not_of(' ') == std::string::npos ? 0 : line.find_first_not_of(' ');
    const std::string more(indent > 0 ? indent + 4 : 0, ' ');
    out += line.substr(0, indent);
    size_t col = indent;
    std::istringstream words(line.substr(indent));
    std::string word;
    bool start = true;
    while (words >> word) {
      if (!start && col + 1 + word.size() > width) {
        out += '\n' + more;
        col = more.size();
      } else if (!start) {
        out += ' ';
        ++col;
      }
      out += word;
      col += word.size();
      start = false;
    }
  }
  if (!text.empty() && text.back() == '\n') out += '\n';
  return out;
}

WrappingFormatter::WrappingFormatter(int width) : width_(size_t(width)) {
  column_width(kNameColumn);
}

std::string WrappingFormatter::make_description(const CLI::App* app) const {
  const std::string desc = app->get_description();
  return desc.empty() ? std::string() : wrap_text(desc, width_ - 1) + "\n\n";
}

std::string WrappingFormatter::make_option_desc(const CLI::Option* opt) const {
  return wrap_text(CLI::Formatter::make_option_desc(opt),
                   std::max<size_t>(width_ - kNameColumn - 1, 20));
}

// In a list of subcommands, the first line of each one's description.
std::string WrappingFormatter::make_subcommand(const CLI::App* sub) const {
  std::string desc = sub->get_description();
  desc = desc.substr(0, desc.find('\n'));
  if (!desc.empty() && desc.back() == ':') desc.pop_back();
  std::stringstream out;
  CLI::detail::format_help(out, sub->get_display_name(true),
                           wrap_text(desc, std::max<size_t>(width_ - kNameColumn - 1, 20)),
                           kNameColumn);
  return out.str();
}

}  // namespace lockstep::apps
