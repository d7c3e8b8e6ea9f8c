#include "deformConvPluginWorkspace.h"

#include "deformConvGemmPlan.h"
#include "deformConvKernel.h"
#include "deformConvTactics.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>

namespace dcn
{

namespace
{

constexpr size_t kMaxByteSize = size_t(1) << 62;

void skipSpaces(std::string const& text, size_t& at)
{
    while (at < text.size() && std::isspace(static_cast<unsigned char>(text[at])))
        ++at;
}

// The value of a unit letter (K, M, G, T; none = MiB), 0 for another character.
size_t unitBytes(char unit)
{
    switch (std::toupper(static_cast<unsigned char>(unit)))
    {
    case 'K': return size_t(1) << 10;
    case 'M': return size_t(1) << 20;
    case 'G': return size_t(1) << 30;
    case 'T': return size_t(1) << 40;
    default: return 0;
    }
}

} // namespace

Status parseByteSize(std::string const& text, char const* what, size_t& bytes)
{
    Status const malformed = Status::invalid(std::string(what) + " must be a size such as 512M, 2G or 1024 (MiB), got '"
        + text + "'");
    size_t at = 0;
    skipSpaces(text, at);
    // The number: digits, then optionally '.' and digits (kept as whole and fraction to stay exact).
    size_t whole = 0, fraction = 0, fractionScale = 1;
    size_t const digitsStart = at;
    for (; at < text.size() && std::isdigit(static_cast<unsigned char>(text[at])); ++at)
    {
        size_t const digit = size_t(text[at] - '0');
        if (whole > (kMaxByteSize - digit) / 10) // checked before the multiply, which could wrap
            return Status::invalid(std::string(what) + " is too large: '" + text + "'");
        whole = whole * 10 + digit;
    }
    if (at == digitsStart)
        return malformed;
    if (at < text.size() && text[at] == '.')
    {
        size_t const fractionStart = ++at;
        for (; at < text.size() && std::isdigit(static_cast<unsigned char>(text[at])); ++at)
            if (fractionScale < size_t(1e15)) // more digits than that cannot change a byte count below 2^62
            {
                fraction = fraction * 10 + size_t(text[at] - '0');
                fractionScale *= 10;
            }
        if (at == fractionStart)
            return malformed;
    }
    skipSpaces(text, at);
    size_t unit = unitBytes(at < text.size() ? text[at] : '\0');
    if (unit)
        ++at;
    else
        unit = size_t(1) << 20;
    if (at < text.size() && (text[at] == 'i' || text[at] == 'I'))
        ++at;
    if (at < text.size() && (text[at] == 'b' || text[at] == 'B'))
        ++at;
    skipSpaces(text, at);
    if (at != text.size())
        return malformed;
    if (whole > kMaxByteSize / unit)
        return Status::invalid(std::string(what) + " is too large: '" + text + "'");
    bytes = whole * unit + size_t((long double)(fraction) * (long double)(unit) / (long double)(fractionScale));
    if (bytes == 0)
        return Status::invalid(std::string(what) + " must be positive, got '" + text + "'");
    return Status::success();
}

Status workspaceLimitFromEnvironment(size_t& limit)
{
    limit = 0;
    char const* text = std::getenv(kWorkspaceLimitVariable);
    if (text == nullptr || *text == '\0')
        return Status::success();
    Status const status = parseByteSize(text, kWorkspaceLimitVariable, limit);
    if (!status.ok())
        return Status::invalid(status.message + ": unset it, or set it to the engine build's workspace limit");
    return status;
}

Status workspaceChargesTensorsFromEnvironment(bool& charges)
{
    char const* text = std::getenv(kWorkspaceChargesTensorsVariable);
    std::string const value = text ? text : "";
    charges = value == "1";
    if (value.empty() || value == "0" || value == "1")
        return Status::success();
    return Status::invalid(std::string(kWorkspaceChargesTensorsVariable) + " must be 1 (the builder counts a layer's "
        "inputs and outputs against the workspace limit, as TensorRT-RTX's does) or 0, got '" + value
        + "': unset it or set one of those");
}

size_t layerTensorBytes(DeformConvGeometry const& largest, int32_t dtype, bool hasBias, bool hasMask)
{
    dcn_deform_conv_desc const& d = largest.d;
    size_t const pixels = size_t(d.batch) * size_t(largest.outH) * size_t(largest.outW);
    size_t const samples = size_t(d.offset_group) * size_t(largest.kernelPoints); // per output pixel
    size_t const elements = size_t(d.batch) * size_t(d.in_channels) * size_t(d.height) * size_t(d.width) // x
        + size_t(d.out_channels) * size_t(largest.channelsPerGroup) * size_t(largest.kernelPoints)      // weight
        + pixels * 2 * samples                                                                          // offset
        + (hasBias ? size_t(d.out_channels) : 0) + (hasMask ? pixels * samples : 0)
        + pixels * size_t(d.out_channels); // output
    return elements * dtypeBytes(dtype);
}

std::string workspaceLimitCacheSuffix()
{
    size_t limit = 0;
    bool chargesTensors = false;
    if (!workspaceLimitFromEnvironment(limit).ok() || limit == 0) // a malformed value stops configurePlugin instead
        return "";
    workspaceChargesTensorsFromEnvironment(chargesTensors);
    return ";workspace_limit=" + std::to_string(limit) + (chargesTensors ? ";charges_tensors=1" : "");
}

size_t pluginWorkspaceBytes(DeformConvGeometry const& largest, int32_t dtype, bool gemmAvailable, size_t columnBudget,
    bool channelsLast)
{
    GemmOptions options;
    options.columnBudget = columnBudget;
    options.channelsLastTensors = channelsLast;
    size_t bytes = 0;
    for (int32_t algo :
        workspaceAlgos(channelsLast ? channelsLastTactics(largest, dtype) : validTactics(largest, dtype, gemmAvailable)))
        bytes = std::max(bytes, deformConvWorkspaceSize(largest, dtype, algo, options));
    return bytes;
}

Status columnBudgetWithin(DeformConvGeometry const& largest, int32_t dtype, bool gemmAvailable, size_t limit,
    size_t tensorBytes, size_t& columnBudget, bool channelsLast)
{
    columnBudget = kGemmDefaultColumnBudget;
    if (limit == 0)
        return Status::success();
    for (size_t budget = kGemmDefaultColumnBudget; budget >= kSmallestColumnBudget; budget /= 2)
        if (tensorBytes <= limit
            && pluginWorkspaceBytes(largest, dtype, gemmAvailable, budget, channelsLast) <= limit - tensorBytes)
        {
            columnBudget = budget;
            return Status::success();
        }
    size_t const least = pluginWorkspaceBytes(largest, dtype, gemmAvailable, kSmallestColumnBudget, channelsLast);
    std::string const tensors = tensorBytes == 0 ? std::string(" of workspace")
        : " of workspace and " + describeBytes(tensorBytes) + " for its inputs and outputs, which this builder counts "
            "against the limit too (" + kWorkspaceChargesTensorsVariable + "=1), in all "
            + describeBytes(least + tensorBytes) + ",";
    return Status::invalid("at the optimisation profile's largest shapes (batch " + std::to_string(largest.d.batch)
        + ", " + std::to_string(largest.d.in_channels) + "x" + std::to_string(largest.d.height) + "x"
        + std::to_string(largest.d.width) + ") this layer needs at least " + describeBytes(least) + tensors
        + " over the limit of " + describeBytes(limit) + " (" + kWorkspaceLimitVariable
        + "): raise the workspace limit (dcn-deploy build --workspace, trtexec --memPoolSize) and "
        + kWorkspaceLimitVariable + " to at least that, or lower the profile's max shapes");
}

std::string describeBytes(size_t bytes)
{
    char text[64];
    if (bytes >= (size_t(1) << 30))
        std::snprintf(text, sizeof(text), "%.1f GiB", double(bytes) / double(size_t(1) << 30));
    else if (bytes >= (size_t(1) << 20))
        std::snprintf(text, sizeof(text), "%.1f MiB", double(bytes) / double(size_t(1) << 20));
    else if (bytes >= (size_t(1) << 10))
        std::snprintf(text, sizeof(text), "%.1f KiB", double(bytes) / double(size_t(1) << 10));
    else
        std::snprintf(text, sizeof(text), "%zu bytes", bytes);
    return text;
}

} // namespace dcn
