// Help text wrapped to the terminal: `lockstep ... --help` fits COLUMNS (else the terminal's
// width from ioctl, else 80 columns), descriptions indented under their option.
//
//   app.formatter(std::make_shared<lockstep::apps::WrappingFormatter>(terminal_width()));
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace lockstep::apps {

// COLUMNS when it is a number, else the width of the terminal on stdout, else 80; at least 40.
int terminal_width();

// `text` with its lines broken at spaces to at most `width` columns (a longer word stands
// alone); the rest of an indented line (an example) is indented 4 more.
std::string wrap_text(const std::string& text, size_t width);

class WrappingFormatter : public CLI::Formatter {
 public:
  explicit WrappingFormatter(int width);
  std::string make_description(const CLI::App* app) const override;
  std::string make_option_desc(const CLI::Option* opt) const override;
  std::string make_subcommand(const CLI::App* sub) const override;

 private:
  size_t width_;
};

}  // namespace lockstep::apps
