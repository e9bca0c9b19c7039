/** Lab component 'fuzz' (placeholder until it lands). */
import type { Component } from './types';

export const component: Component = {
  name: 'fuzz',
  async run() {
    return {};
  },
};
