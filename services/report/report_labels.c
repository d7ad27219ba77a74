/* report_labels.c: page words by key, Japanese first (the plan's language), then English. */
#include <string.h>

#include "report_labels.h"

static const struct {
  const char *key, *ja, *en;
} labels[] = {
    {"l_site", "芦別市 総合戦略 KPI 進捗", "Ashibetsu City strategy: KPI progress"},
    {"l_table", "KPI 一覧", "KPI table"},
    {"l_as_of", "基準日", "As of"},
    {"l_evaluated", "評価日", "Evaluated on"},
    {"l_latest", "最新（評価サービスの現在値）", "Latest (the evaluator's current figures)"},
    {"l_fy_end", "年度末", "end of"},
    {"l_show", "表示", "Show"},
    {"l_counts", "状況の内訳", "Statuses"},
    {"l_stale", "報告遅延", "report overdue"},
    {"l_stale_count", "報告遅延", "Reports overdue"},
    {"l_csv", "CSV（Excel 用）をダウンロード", "Download CSV (for Excel)"},
    {"l_other_lang", "English", "日本語"},
    {"l_legend", "凡例", "Legend"},
    {"l_grades", "評価の基準", "Grades"},
    {"l_pace_note",
     "期待ペースは基準値から目標値までを期間で按分した進み具合、進捗率は基準値から目標値までのうち達成した割合です。",
     "Expected pace is the share of the period from baseline to due date that has passed; "
     "progress is the share of the way from baseline to target that has been covered."},
    {"l_none", "なし", "none"},
    {"l_back", "KPI 一覧へ戻る", "Back to the KPI table"},
    {"l_chart", "実績と期待ペース", "Readings against the expected pace"},
    {"l_target", "目標", "Target"},
    {"l_due", "期限", "Due"},
    {"l_pace", "期待ペース", "Expected pace"},
    {"l_actual", "実績", "Actual"},
    {"l_cumulative", "累計", "Running total"},
    {"l_ratio", "年度ごとの比率", "Ratio per fiscal year"},
    {"l_no_readings", "まだ報告がありません。", "Nothing reported yet."},
    {"l_no_history", "履歴はまだありません。", "No history yet."},
    {"l_no_notices", "通知はまだ送信されていません。", "No notices sent."},
    {"l_kind", "集計方法", "Aggregation"},
    {"l_owner", "担当課", "Department"},
    {"l_summary", "概要", "Summary"},
    {"l_numerator", "分子", "numerator"},
    {"l_denominator", "分母", "denominator"},
    {"l_recipients", "宛先", "recipients"},
    {"l_delivered", "配信済み", "delivered"},
    {"l_pending", "配信待ち", "pending"},
    {"l_dead", "配信失敗", "failed"},
    {"h_goal", "基本目標", "Basic goal"},
    {"h_program", "事業", "Program"},
    {"h_measure", "具体的な施策", "Measure"},
    {"h_indicator", "指標", "Indicator"},
    {"h_baseline", "基準値", "Baseline"},
    {"h_target", "目標値", "Target"},
    {"h_actual", "実績値", "Actual"},
    {"h_observed", "観測日", "Observed"},
    {"h_progress", "進捗率", "Progress"},
    {"h_expected", "期待ペース", "Expected pace"},
    {"h_status", "状況", "Status"},
    {"h_grade", "評価", "Grade"},
    {"h_last", "最終報告日", "Last report"},
    {"h_readings", "報告された実績", "Readings"},
    {"h_value", "値", "Value"},
    {"h_component", "区分", "Component"},
    {"h_department", "報告課", "Department"},
    {"h_received", "受付日時", "Received"},
    {"h_note", "備考", "Note"},
    {"h_history", "達成状況の履歴", "Attainment history"},
    {"h_notices", "送信した通知", "Notices sent"},
    {"h_when", "日時", "When"},
    {"h_notice", "通知", "Notice"},
    {"h_delivery", "配信", "Delivery"},
    {"kind_level", "最新の実績値", "latest reading"},
    {"kind_cumulative", "期間内の累計", "sum over the plan window"},
    {"kind_ratio", "直近年度の比率（分子÷分母）", "ratio of the latest fiscal year"},
    {"kind_maintain", "基準値の維持", "keep the baseline"},
    {"kind_milestone", "達成／未達成", "done or not"},
    {"l_retracted", "取消", "Retracted"},
    {"l_correction", "訂正", "Correction"},
    {"h_ack", "対応方針", "Response plan"},
    {"l_ack_by", "記入", "Written by"},
    {"l_ack_until", "督促の停止", "Reminders paused until"},
    {"l_ack_until_suffix", "まで", ""},
    {"notice_alert", "警告", "Alert"},
    {"notice_reminder", "再通知", "Reminder"},
    {"notice_resolved", "解消", "Resolved"},
};

const char *report_label(const char *key, report_lang lang) {
  for (size_t i = 0; i < sizeof(labels) / sizeof(labels[0]); i++)
    if (strcmp(labels[i].key, key) == 0)
      return lang == REPORT_LANG_EN ? labels[i].en : labels[i].ja;
  return "";
}

void report_labels_set(report_view *v, report_lang lang) {
  for (size_t i = 0; i < sizeof(labels) / sizeof(labels[0]); i++)
    report_set(v, labels[i].key, lang == REPORT_LANG_EN ? labels[i].en : labels[i].ja);
}
