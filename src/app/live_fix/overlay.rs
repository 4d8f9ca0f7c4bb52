//! How raw and fixed frames are drawn over the viewport (fixed only, side by side, or a split line
//! that can be dragged).

use difix3d::fix::session::WorkerState;

use super::{LiveFixPanel, ViewMode};

impl LiveFixPanel {
    /// Draws the frame: the raw render, and the fixed one as the view mode says once it is there.
    pub fn paint_ui(&self, ui: &egui::Ui, rect: egui::Rect, raw: egui::TextureId, frame_id: u64) {
        let full = egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0));
        let painter = ui.painter_at(rect);
        let fixed = self.fixed_for(frame_id).map(|t| t.id());
        let waiting = self.enabled && fixed.is_none();
        match (fixed, self.view_mode) {
            (None, ViewMode::SideBySide) if self.enabled => {
                let (left, _) = halves(rect);
                painter.image(raw, left, full, egui::Color32::WHITE);
            }
            (None, _) => {
                painter.image(raw, rect, full, egui::Color32::WHITE);
            }
            (Some(fixed), ViewMode::Fixed) => {
                painter.image(fixed, rect, full, egui::Color32::WHITE);
            }
            (Some(fixed), ViewMode::SideBySide) => {
                let (left, right) = halves(rect);
                painter.image(raw, left, full, egui::Color32::WHITE);
                painter.image(fixed, right, full, egui::Color32::WHITE);
            }
            (Some(fixed), ViewMode::Split) => {
                painter.image(raw, rect, full, egui::Color32::WHITE);
                let x = rect.min.x + self.split * rect.width();
                let right = egui::Rect::from_min_max(egui::pos2(x, rect.min.y), rect.max);
                let uv = egui::Rect::from_min_max(egui::pos2(self.split, 0.0), egui::pos2(1.0, 1.0));
                painter.image(fixed, right, uv, egui::Color32::WHITE);
            }
        }
        if waiting && *self.session.state() == WorkerState::Ready {
            painter.text(
                rect.right_bottom() + egui::vec2(-10.0, -10.0),
                egui::Align2::RIGHT_BOTTOM,
                "fixing…",
                egui::FontId::proportional(14.0),
                egui::Color32::from_white_alpha(200),
            );
        }
        if self.enabled && self.view_mode == ViewMode::Split {
            let x = rect.min.x + self.split * rect.width();
            painter.vline(
                x,
                rect.y_range(),
                egui::Stroke::new(2.0, egui::Color32::from_white_alpha(220)),
            );
            painter.text(
                egui::pos2(x, rect.max.y - 24.0),
                egui::Align2::CENTER_CENTER,
                "raw | fixed",
                egui::FontId::proportional(12.0),
                egui::Color32::WHITE,
            );
        }
    }

    /// The draggable split line (split view only). Returns true while it is being dragged, so the
    /// camera does not move with the same drag.
    pub fn split_drag_ui(&mut self, ui: &egui::Ui, rect: egui::Rect) -> bool {
        if !(self.enabled && self.view_mode == ViewMode::Split) {
            return false;
        }
        let x = rect.min.x + self.split * rect.width();
        let handle = egui::Rect::from_center_size(egui::pos2(x, rect.center().y), egui::vec2(12.0, rect.height()));
        let response = ui.interact(handle, ui.id().with("split handle"), egui::Sense::drag());
        if response.dragged() {
            if let Some(pos) = response.interact_pointer_pos() {
                self.split = ((pos.x - rect.min.x) / rect.width()).clamp(0.0, 1.0);
            }
        }
        if response.hovered() || response.dragged() {
            ui.ctx().set_cursor_icon(egui::CursorIcon::ResizeHorizontal);
        }
        response.dragged()
    }
}

/// The left and right halves of `rect`, each letterboxed to the full frame's aspect ratio.
fn halves(rect: egui::Rect) -> (egui::Rect, egui::Rect) {
    let aspect = rect.width() / rect.height().max(1.0);
    let half = egui::vec2(rect.width() / 2.0, rect.width() / 2.0 / aspect);
    let y = rect.center().y - half.y / 2.0;
    (
        egui::Rect::from_min_size(egui::pos2(rect.min.x, y), half),
        egui::Rect::from_min_size(egui::pos2(rect.center().x, y), half),
    )
}
